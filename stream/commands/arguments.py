"""Checking what a user gave on the command line, before any work starts.

The exit codes of ``disengage``: 0 done, 1 failed while running (no valid
event in the input, Kafka unreachable), 2 usage (a bad option value, an input
that cannot be opened, an output that cannot be written). argparse exits with
2 on its own for the options it checks through the ``type=`` functions here.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:  # pydantic-settings costs ~0.3 s to import: only commands that run load it
    from detectors.config import DetectorConfig
    from stream.settings import Settings


class CommandError(Exception):
    """A failure reported as one line, ``<prog>: <message>``, exit code 1."""

    code = 1


class UsageError(CommandError):
    """Bad input from the user (an option, a path), exit code 2."""

    code = 2


def positive_int(text: str) -> int:
    """argparse ``type=`` for a count that must be at least 1.

    >>> positive_int("3")
    3
    >>> positive_int("-5")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a positive whole number, got -5
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse ``type=`` for a finite number above 0 (a rate, a duration).

    >>> positive_float("0.5")
    0.5
    >>> positive_float("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be a number above 0, got 0
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def kafka_failure(settings: Settings, exc: Exception) -> CommandError:
    """The one line for a Kafka client that failed: unreachable, or refused."""
    from aiokafka.errors import KafkaConnectionError

    servers = settings.kafka_bootstrap_servers
    if isinstance(exc, KafkaConnectionError | OSError):
        return CommandError(
            f"cannot reach Kafka at {servers} ({type(exc).__name__}); is it running? "
            "DISENGAGE_KAFKA_BOOTSTRAP_SERVERS sets the address"
        )
    return CommandError(f"Kafka at {servers} failed: {type(exc).__name__}: {exc}")


def quiet_kafka_client_logs() -> None:
    """aiokafka logs each failed connection attempt; a command reports the
    failure itself, in one line."""
    import logging

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def load_settings() -> Settings:
    """The ``DISENGAGE_*`` settings; a bad variable ends the command with its name."""
    from stream.settings import Settings, SettingsError

    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise SystemExit(f"disengage: {exc}") from None


def start_service(name: str, loglevel: str | None) -> tuple[Settings, str]:
    """The start of a long-running service (``worker``, ``trainer``): its
    settings, logging at ``loglevel`` (default ``DISENGAGE_LOG_LEVEL``), the
    settings logged with secrets masked, and the topics created when missing.
    Kafka unreachable ends the command with one line. Returns the settings
    and the log level used."""
    import asyncio
    import logging

    from stream.kafka_io import ensure_topics

    settings = load_settings()
    level = (loglevel or settings.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger(f"disengage.{name}").info("settings %s", settings.redacted())
    try:
        asyncio.run(ensure_topics(settings))  # logs what it created
    except Exception as exc:  # broker unreachable or refused: say so, exit non-zero
        raise SystemExit(
            f"disengage {name}: cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}"
        ) from None
    return settings, level


def add_goal_option(parser: argparse.ArgumentParser) -> None:
    """``--goal TYPE``: the event that counts as a conversion (an event type)."""
    from detectors.config import EVENT_TYPES, DetectorConfig

    parser.add_argument(
        "--goal",
        choices=sorted(EVENT_TYPES),
        metavar="TYPE",
        help=f"goal event type (default {DetectorConfig().goal_event}; one of the event types)",
    )


def detector_config(args: argparse.Namespace) -> DetectorConfig:
    """The detector configuration from the settings, with ``--goal`` applied."""
    config = load_settings().detector
    if getattr(args, "goal", None):
        config = config.with_overrides(goal_event=args.goal)
    try:
        return config.validate()
    except ValueError as exc:
        raise SystemExit(f"disengage: {exc}") from None


def check_writable(path: str) -> None:
    """Raise :class:`UsageError` when ``path`` could not be written, without
    creating or truncating anything (for a second output checked before the
    first is opened)."""
    if os.path.isdir(path):
        raise UsageError(f"cannot write {path}: it is a directory")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"cannot write {path}: No such file or directory")
    if not os.access(path if os.path.exists(path) else folder, os.W_OK):
        raise UsageError(f"cannot write {path}: Permission denied")


def open_output(path: str | None) -> IO[str]:
    """stdout for ``None`` or ``-``, else ``path`` opened for writing now, so that
    a bad path stops the command before the work starts."""
    if path in (None, "-"):
        return sys.stdout
    if os.path.isdir(path):
        raise UsageError(f"cannot write {path}: it is a directory")
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None


@contextlib.contextmanager
def output(path: str | None) -> Iterator[IO[str]]:
    """:func:`open_output` as a context; stdout is left open."""
    out = open_output(path)
    try:
        yield out
    finally:
        if out is not sys.stdout:
            out.close()
