"""Reading an events file for ``replay`` and ``evaluate``, and saying what was wrong with it.

:func:`event_lines` opens a JSON Lines file (or ``-``, stdin) as raw byte lines:
gzip is recognised by its magic bytes whatever the file is called, and a UTF-8
byte-order mark is skipped. Content that cannot be JSON Lines (a JSON array, a
zip or other archive, UTF-16 text, a binary file) is refused before any work
with a message that says what was found. On a terminal a progress bar runs on
stderr.

The lines go to the core's :func:`detectors.offline.runner.parse_lines`, which keeps
the first bad lines with their numbers; :func:`report_invalid` prints them and
a total per reason, and :func:`require_events` fails when nothing was valid.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, cast

from stream.commands.arguments import CommandError, UsageError

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
if TYPE_CHECKING:  # the runner imports River: too slow to load for a usage error
    from detectors.offline.runner import RunStats

#: Starts of files that are certainly not JSON Lines, and what they are.
NOT_JSON_LINES: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a zip archive (unzip it first)"),
    (b"BZh", "bzip2-compressed (decompress it first, or use gzip)"),
    (b"\xfd7zXZ\x00", "xz-compressed (decompress it first, or use gzip)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed (decompress it first, or use gzip)"),
    (b"\xff\xfe", "UTF-16 text (save it as UTF-8)"),
    (b"\xfe\xff", "UTF-16 text (save it as UTF-8)"),
    (b"PAR1", "a Parquet file"),
    (b"SQLite format 3\x00", "an SQLite database"),
)
#: Bytes looked at to recognise the content.
SNIFF_BYTES = 4096
#: Lines between two progress-bar updates.
PROGRESS_EVERY = 2048


def display_name(path: str) -> str:
    return "stdin" if path == "-" else path


def _open_binary(path: str) -> io.BufferedReader:
    if path == "-":
        return cast(io.BufferedReader, sys.stdin.buffer)
    if os.path.isdir(path):
        raise UsageError(f"cannot read {path}: it is a directory")
    try:
        return open(path, "rb")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def check_readable(path: str) -> None:
    """Fail now, with a usage error, when ``path`` cannot be opened."""
    if path != "-":
        _open_binary(path).close()


def _refuse_non_jsonl(head: bytes, name: str) -> None:
    """Raise :class:`CommandError` when ``head`` (the first bytes, after any
    decompression and BOM) cannot start a JSON Lines file."""
    for magic, what in NOT_JSON_LINES:
        if head.startswith(magic):
            raise CommandError(f"{name} is {what}, not JSON Lines")
    if b"\x00" in head:
        raise CommandError(f"{name} looks binary (it has NUL bytes), not JSON Lines text")
    first = head.lstrip()[:1]
    if first == b"[":
        raise CommandError(
            f"{name} holds a JSON array; one event object per line is needed "
            f"(for example: jq -c '.[]' {name} > events.jsonl)"
        )
    first_line = head.lstrip().split(b"\n", 1)[0].strip()
    if first_line == b"{":
        raise CommandError(
            f"{name} holds pretty-printed JSON; one event object per line is needed "
            f"(for example: jq -c . {name} > events.jsonl)"
        )


@contextlib.contextmanager
def event_lines(path: str, label: str) -> Iterator[Iterator[bytes]]:
    """The lines of the events file ``path`` (``-``: stdin) as bytes.

    Raises :class:`UsageError` when it cannot be opened and
    :class:`CommandError` when its content cannot be JSON Lines (see
    :data:`NOT_JSON_LINES`), both before a line is read. ``label`` names the
    progress bar shown on a terminal.
    """
    name = display_name(path)
    raw = _open_binary(path)
    try:
        stream: io.BufferedIOBase = raw
        head = raw.peek(SNIFF_BYTES)[:SNIFF_BYTES]
        if head.startswith(GZIP_MAGIC):
            gz = gzip.GzipFile(fileobj=raw, mode="rb")
            try:
                head = gz.peek(SNIFF_BYTES)[:SNIFF_BYTES]
            except (OSError, EOFError) as exc:
                raise CommandError(f"{name} is not readable gzip: {exc}") from None
            stream = gz
        if head.startswith(UTF8_BOM):
            stream.read(len(UTF8_BOM))
            head = head[len(UTF8_BOM) :]
        _refuse_non_jsonl(head, name)
        yield _with_progress(_lines(stream, name), raw, path, label)
    finally:
        if raw is not sys.stdin.buffer:
            raw.close()


def _lines(stream: io.BufferedIOBase, name: str) -> Iterator[bytes]:
    number = 0
    try:
        for number, line in enumerate(stream, start=1):  # noqa: B007 (read after the loop)
            yield line
    except (OSError, EOFError) as exc:  # a truncated or corrupt gzip member
        raise CommandError(f"{name}: cannot read past line {number}: {exc}") from None


def _with_progress(
    lines: Iterator[bytes], raw: io.BufferedReader, path: str, label: str
) -> Iterator[bytes]:
    """``lines`` unchanged; a rich progress bar on stderr over the bytes read
    from ``raw`` (compressed bytes for gzip) when stderr is a terminal."""
    if path == "-" or not sys.stderr.isatty():
        yield from lines
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    total = os.fstat(raw.fileno()).st_size
    with Progress(
        f"[bold]{label}[/]",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=total or None)
        for n, line in enumerate(lines):
            if n % PROGRESS_EVERY == 0:
                progress.update(task, completed=raw.tell())
            yield line
        progress.update(task, completed=total)


def report_invalid(stats: RunStats, path: str, prog: str, out: IO[str] | None = None) -> None:
    """Print the kept bad lines (``<file>:<line>: <reason>: <detail>``) and a
    total per reason on ``out`` (default stderr); nothing when all were valid."""
    out = out or sys.stderr
    invalid = sum(stats.invalid.values())
    if not invalid:
        return
    name = display_name(path)
    for bad in stats.bad_lines:
        print(f"{prog}: {name}:{bad.line}: {bad.reason}: {bad.detail}", file=out)
    totals = ", ".join(f"{reason} {n:,}" for reason, n in stats.invalid.most_common())
    shown = len(stats.bad_lines)
    more = f"; the first {shown} shown" if invalid > shown else ""
    print(
        f"{prog}: {invalid:,} of {stats.lines:,} lines of {name} are not valid events "
        f"({totals}){more}",
        file=out,
    )


def require_events(stats: RunStats, path: str) -> None:
    """Raise :class:`CommandError` when no line of ``path`` was a valid event."""
    name = display_name(path)
    if stats.lines == 0:
        raise CommandError(f"no events in {name}: it is empty")
    if stats.valid_lines == 0:
        raise CommandError(f"no valid event in {name}: all {stats.lines:,} lines are invalid")
