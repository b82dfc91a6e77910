"""Benchmark of the session-state codecs: the worker's Redis codec
(:mod:`stream.state_codec`: orjson, raw binary fields, zstd) against the
core's reference codec (:meth:`SessionState.to_bytes`: stdlib JSON, base64,
zlib), on the same states.

The worker encodes every state an event touched, so on live traffic (one
event per session per batch) the encode is paid once per event. The states are
sampled from a simulated run (every 37th event's open session), and each
state is replayed from its bytes first so both codecs see decoded objects,
as the worker's cache holds.

Prints, per codec: encode and decode µs per state (best of ``--repeat``), and
the stored size (mean, p99). The same run also checks that each codec's bytes
decode to the state it encoded, so a faster but lossy codec cannot pass. The
only assertion on speed is a generous floor: the Redis codec encodes at least
1.5x as fast as the reference one (measured: ~3x).

    python benchmarks/bench_state_codec.py                  # 3,000 sessions, seed 3
    python benchmarks/bench_state_codec.py --sessions 500 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from detectors.config import DetectorConfig
from detectors.detector import Detector
from detectors.events import EventParser
from detectors.offline.runner import OfflineRunner
from detectors.session import SessionState
from detectors.simulation.simulator import SimConfig, Simulator
from stream import state_codec

#: The floor of the encode speed-up (Redis codec against the reference).
MIN_SPEEDUP = 1.5


def sample_states(sessions: int, seed: int, every: int = 37) -> list[SessionState]:
    """Open sessions' states, every ``every``-th event of a simulated run."""
    config = DetectorConfig()
    runner = OfflineRunner(Detector(config))
    parse = EventParser(config).parse
    out: list[SessionState] = []
    for i, raw in enumerate(Simulator(SimConfig(sessions=sessions, seed=seed)).events()):
        runner.feed(parse(raw))
        if i % every:
            continue
        state = runner.sessions.get(raw["session_id"])
        if state is not None and state.outcome is None:
            out.append(SessionState.from_bytes(state.to_bytes()))
    return out


def per_state_us(fn: Callable[[Any], Any], items: list[Any], repeat: int) -> float:
    """Best-of-``repeat`` µs per item of ``fn`` over ``items``."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - started)
    return best / len(items) * 1e6


def same(a: SessionState, b: SessionState) -> bool:
    """Equal states, NaN click coordinates counted equal."""
    return a.to_bytes() == b.to_bytes()


def measure(states: list[SessionState], repeat: int) -> dict[str, dict[str, float]]:
    codecs: dict[str, tuple[Callable[[SessionState], bytes], Callable[[bytes], SessionState]]] = {
        "reference (json+zlib)": (SessionState.to_bytes, SessionState.from_bytes),
        "redis (orjson+zstd)": (state_codec.encode, state_codec.decode),
    }
    out: dict[str, dict[str, float]] = {}
    for name, (encode, decode) in codecs.items():
        blobs = [encode(s) for s in states]
        lossy = sum(not same(decode(b), s) for b, s in zip(blobs, states, strict=True))
        if lossy:
            raise SystemExit(f"{name}: {lossy} states did not survive their bytes")
        sizes = sorted(len(b) for b in blobs)
        out[name] = {
            "encode_us": per_state_us(encode, states, repeat),
            "decode_us": per_state_us(decode, blobs, repeat),
            "bytes_mean": statistics.fmean(sizes),
            "bytes_p99": float(sizes[int(0.99 * (len(sizes) - 1))]),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    states = sample_states(args.sessions, args.seed)
    figures = measure(states, args.repeat)
    ref, fast = figures["reference (json+zlib)"], figures["redis (orjson+zstd)"]
    speedup = ref["encode_us"] / fast["encode_us"]
    if args.json:
        print(json.dumps({"states": len(states), "codecs": figures, "encode_speedup": speedup}))
    else:
        print(
            f"{len(states)} simulated mid-session states "
            f"({args.sessions} sessions, seed {args.seed})"
        )
        print(f"{'codec':<24}{'encode µs':>11}{'decode µs':>11}{'mean B':>9}{'p99 B':>8}")
        for name, f in figures.items():
            print(
                f"{name:<24}{f['encode_us']:>11.1f}{f['decode_us']:>11.1f}"
                f"{f['bytes_mean']:>9.0f}{f['bytes_p99']:>8.0f}"
            )
        print(f"encode speed-up {speedup:.2f}x (floor {MIN_SPEEDUP}x)")
    if speedup < MIN_SPEEDUP:
        print(f"FAIL: the Redis codec is only {speedup:.2f}x the reference", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
