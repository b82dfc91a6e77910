"""Independent synthetic journeys for evaluating the disengage detector (evaluation only).

Written from ``PERSONAS.md`` without reading the project's own simulator, signals or models,
so that it does not share their assumptions. Never tune a threshold or a feature against it.

Sessions arrive as a Poisson process (mean gap 2.4 s, so 10,000 sessions span ~6.7 hours and
overlap); each plays one persona of its site; all events are merged and sorted by ``ts``.
Stdlib only; the same ``seed`` always gives the same output.

>>> events, truth = generate("shop", 40, seed=5)
>>> len(truth), all(a["ts"] <= b["ts"] for a, b in zip(events, events[1:]))
(40, True)
>>> sorted(truth[0])
['converted', 'episodes', 'frustrated', 'hesitant', 'persona', 'session_id', 'site']

Command line::

    python benchmarks/independent/journeys.py --site shop --sessions 10000 --seed 11 \\
        --out events.jsonl [--truth truth.jsonl]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

# The persona modules sit beside this file; it runs as a script and is imported by tests.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import b2b_personas  # noqa: E402
import shop_personas  # noqa: E402
import travel_personas  # noqa: E402
from journey_kit import Event, Persona, Visit  # noqa: E402

#: Site kind -> (goal event type, personas). Shares of each site sum to 1.
SITES: dict[str, tuple[str, tuple[Persona, ...]]] = {
    "shop": ("purchase", shop_personas.PERSONAS),
    "travel": ("purchase", travel_personas.PERSONAS),
    "b2b": ("form_submit", b2b_personas.PERSONAS),
}
#: Mean gap between two session arrivals in seconds (1,500 sessions per hour).
MEAN_ARRIVAL_GAP_S = 2.4
#: 2026-01-01T00:00:00Z in epoch ms.
DEFAULT_START_MS = 1_767_225_600_000


def goal_of(site: str) -> str:
    """The goal event type of ``site`` (``purchase`` or ``form_submit``)."""
    return SITES[site][0]


def _pick(rng: random.Random, personas: tuple[Persona, ...]) -> Persona:
    return rng.choices(personas, weights=[p.share for p in personas])[0]


def generate(
    site: str, sessions: int, seed: int, start_ms: int = DEFAULT_START_MS
) -> tuple[list[Event], list[dict[str, Any]]]:
    """Events (sorted by ``ts``) and one truth record per session.

    Parameters
    ----------
    site
        ``shop``, ``travel`` or ``b2b``.
    sessions
        Number of sessions (arrivals), >= 0.
    seed
        Seed of everything random; the same seed gives the same lists.
    start_ms
        Epoch ms before the first arrival (default 2026-01-01T00:00Z).

    Returns
    -------
    (events, truth)
        ``events`` are contract dicts; ``truth`` has ``session_id``, ``site``, ``persona``,
        ``converted``, ``hesitant``, ``frustrated`` and ``episodes`` (kind, start_ts, end_ts
        in epoch ms), in arrival order.
    """
    if site not in SITES:
        raise ValueError(f"site {site!r} is not one of {', '.join(SITES)}")
    goal, personas = SITES[site]
    master = random.Random(f"independent:{site}:{seed}")
    arrival = float(start_ms)
    events: list[Event] = []
    truth: list[dict[str, Any]] = []
    for number in range(sessions):
        arrival += master.expovariate(1.0 / MEAN_ARRIVAL_GAP_S) * 1000.0
        rng = random.Random(master.getrandbits(64))
        persona = _pick(rng, personas)
        session_id = f"{site[0]}{rng.getrandbits(48):012x}{number % 100:02d}"
        visit = Visit(rng, session_id, int(arrival), rng.random() < persona.mobile, goal)
        persona.script(visit)
        visit.leave()
        events.extend(visit.events)
        kinds = {e["kind"] for e in visit.episodes}
        truth.append(
            {
                "session_id": session_id,
                "site": site,
                "persona": persona.name,
                "converted": visit.converted,
                "hesitant": "hesitation" in kinds,
                "frustrated": "friction" in kinds,
                "episodes": sorted(visit.episodes, key=lambda e: e["start_ts"]),
            }
        )
    events.sort(key=lambda e: e["ts"])  # stable: a session's own order is kept on ties
    return events, truth


def _open_out(path: str) -> IO[str]:
    if path.endswith(".gz"):
        return gzip.open(path, "wt", encoding="utf-8")
    return open(path, "w", encoding="utf-8")


def write_jsonl(path: str, rows: Iterable[dict[str, Any]]) -> int:
    """Write ``rows`` as JSON Lines (gzip when ``path`` ends in ``.gz``); returns the count."""
    count = 0
    with _open_out(path) as out:
        for row in rows:
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--site", choices=sorted(SITES), required=True)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--start-ms", type=int, default=DEFAULT_START_MS)
    parser.add_argument("--out", required=True, help="events JSONL (.gz for gzip)")
    parser.add_argument("--truth", help="truth JSONL, one line per session (.gz for gzip)")
    args = parser.parse_args(argv)
    if args.sessions < 0:
        parser.error("--sessions must be >= 0")
    events, truth = generate(args.site, args.sessions, args.seed, args.start_ms)
    write_jsonl(args.out, events)
    if args.truth:
        write_jsonl(args.truth, truth)
    converters = sum(t["converted"] for t in truth)
    print(
        f"{args.site}: {len(truth)} sessions, {len(events)} events, {converters} converters "
        f"(goal {goal_of(args.site)}) -> {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
