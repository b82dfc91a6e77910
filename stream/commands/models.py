"""``disengage models list | promote | rollback``: the published model versions.

* ``list`` shows every stored version (number, age, sessions learned, the
  training offset it covers, its progressive AUCs, the trust champion and
  challenger with their AUCs over the last comparison window, size) and marks
  the latest and the one served; ``--json`` prints them as JSON lines.
  Champion/challenger promotions happen in the trainer, on evidence
  (:mod:`detectors.challenger`); a pin is the operator's override.
* ``promote VERSION`` pins a version: every worker serves it from its next
  poll (``DISENGAGE_MODEL_POLL_S``), whatever the trainer publishes after.
  ``promote latest`` removes the pin: the workers follow the trainer again.
* ``rollback`` pins the version before the one served now.

Pinning changes what the workers serve, never what the trainer learns: it
keeps learning from every session and publishing, and ``promote latest``
brings its newest version back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from stream.commands.arguments import CommandError, UsageError, load_settings

if TYPE_CHECKING:
    from stream.model_registry import ModelVersion


def add_parser(sub: Any) -> None:
    p = sub.add_parser("models", help="list, promote or roll back published model versions")
    actions = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="the stored versions, newest last")
    ls.add_argument("--json", action="store_true", help="one JSON object per version")
    ls.set_defaults(func=run, prog="disengage models list")
    promote = actions.add_parser(
        "promote", help="serve VERSION everywhere (a pin); 'latest' follows the trainer again"
    )
    promote.add_argument("version", help="a version number (e.g. 12 or v12), or 'latest'")
    promote.set_defaults(func=run, prog="disengage models promote")
    rollback = actions.add_parser("rollback", help="serve the version before the one served now")
    rollback.set_defaults(func=run, prog="disengage models rollback")


def parse_version(text: str) -> int | None:
    """``12`` or ``v12`` -> 12; ``latest`` -> ``None``; else :class:`UsageError`."""
    if text.lower() == "latest":
        return None
    digits = text[1:] if text[:1].lower() == "v" else text
    if not digits.isdigit() or int(digits) < 1:
        raise UsageError(f"not a model version: {text!r} (a number such as 12 or v12, or latest)")
    return int(digits)


def run(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    settings = load_settings()
    try:
        return asyncio.run(_run(args, settings))
    except RedisError as exc:
        raise CommandError(
            f"cannot reach Redis ({type(exc).__name__}); DISENGAGE_REDIS_URL sets the address"
        ) from None


async def _run(args: argparse.Namespace, settings: Any) -> int:
    from stream.model_registry import ModelRegistry
    from stream.redis_store import redis_from_url

    client = redis_from_url(
        settings.redis_url, settings.redis_password, settings.redis_tls, settings.redis_cluster
    )
    registry = ModelRegistry(client, settings.topic_interactions)
    try:
        if args.models_command == "list":
            return await _list(registry, args.json)
        if args.models_command == "promote":
            return await _promote(registry, parse_version(args.version))
        return await _rollback(registry)
    finally:
        await client.aclose()


async def _list(registry: Any, as_json: bool) -> int:
    versions = await registry.versions()
    latest, pinned, serving = await registry.latest(), await registry.pinned(), None
    serving = pinned if pinned is not None else latest
    if not versions:
        print("no model version published yet (is `disengage trainer` running?)")
        return 0
    now = time.time()
    if as_json:
        for v in versions:
            row = {
                "version": v.tag,
                "created_ms": v.created_ms,
                "examples": v.examples,
                "offset": v.offset,
                "trust_auc": v.trust_auc,
                "hazard_auc": v.hazard_auc,
                "serving_learner": v.serving,
                "champion": v.champion,
                "challenger": v.challenger,
                "window_auc": v.window_auc,
                "promotions": v.promotions,
                "bytes": v.size,
                "latest": v.number == latest,
                "served": v.number == serving,
                "pinned": v.number == pinned,
            }
            print(json.dumps(row))
        return 0
    print(
        f"{'version':>8} {'age':>8} {'sessions':>9} {'offset':>9} {'trust AUC':>9} "
        f"{'hazard AUC':>10} {'champion':>21} {'challenger':>18} {'MB':>5}  status"
    )
    for v in versions:
        status = []
        if v.number == serving:
            status.append("served" + (" (pinned)" if pinned is not None else ""))
        if v.number == latest:
            status.append("latest")
        print(
            f"{v.tag:>8} {_age(now - v.created_ms / 1000):>8} {v.examples:>9} {v.offset:>9} "
            f"{_auc(v.trust_auc):>9} {_auc(v.hazard_auc):>10} "
            f"{_champion(v):>21} {_challenger(v):>18} {v.size / 1e6:>5.1f}  {', '.join(status)}"
        )
    return 0


def _champion(v: ModelVersion) -> str:
    """The trust champion and the learner serving in it, e.g. ``online/forest``,
    with its window AUC when compared."""
    shown = f"{v.champion}/{v.serving}"
    return shown if v.window_auc is None else f"{shown} {v.window_auc[0]:.3f}"


def _challenger(v: ModelVersion) -> str:
    if v.challenger is None:
        return "-"
    return v.challenger if v.window_auc is None else f"{v.challenger} {v.window_auc[1]:.3f}"


async def _promote(registry: Any, number: int | None) -> int:
    if number is None:
        await registry.unpin()
        latest = await registry.latest()
        shown = "none yet" if latest is None else f"v{latest}"
        print(f"unpinned: the workers serve the latest version ({shown}) and follow the trainer")
        return 0
    try:
        await registry.pin(number)
    except KeyError:
        stored = ", ".join(f"v{n}" for n in await registry.numbers()) or "none"
        raise CommandError(f"no model version v{number} is stored (stored: {stored})") from None
    print(f"pinned v{number}: the workers serve it from their next poll")
    return 0


async def _rollback(registry: Any) -> int:
    serving = await registry.serving()
    if serving is None:
        raise CommandError("no model version published yet: nothing to roll back")
    older = [n for n in await registry.numbers() if n < serving]
    if not older:
        raise CommandError(f"v{serving} is the oldest stored version: nothing to roll back to")
    await registry.pin(older[-1])
    print(
        f"rolled back from v{serving} to v{older[-1]} (pinned; "
        "`disengage models promote latest` follows the trainer again)"
    )
    return 0


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86_400:.0f}d"


def _auc(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
