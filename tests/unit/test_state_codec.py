"""The worker's Redis codec of session states (stream.state_codec) and the
core's binary-tail layout it writes (SessionState.to_parts / from_parts)."""

from __future__ import annotations

import math
import struct

import orjson
import pytest
import zstandard

from detectors.detector import Detector
from detectors.session import PARTS_VERSION, SessionState
from stream import state_codec
from tests.builders import Driver
from tests.unit.test_session_state import CFG, has_nan, run, simulated


def test_every_state_of_a_simulated_run_survives_the_codec_at_every_step() -> None:
    """Stepping on decoded states gives the same states and alerts as
    stepping on the objects, as a Redis-backed worker does."""
    events = simulated(200, 5)
    det = Detector(CFG)
    states: dict[str, SessionState] = {}
    decoded: dict[str, SessionState] = {}
    alerts: list[str] = []
    decoded_alerts: list[str] = []
    for e in events:
        result = det.process(states.get(e.session_id), e)
        states[e.session_id] = result.state
        alerts += [a.id for a in result.alerts]
        back = state_codec.decode(state_codec.encode(result.state))
        assert back.to_bytes() == result.state.to_bytes()
    replay = Detector(CFG)
    for e in events:
        prior = decoded.get(e.session_id)
        if prior is not None:
            prior = state_codec.decode(state_codec.encode(prior))
        result = replay.process(prior, e)
        decoded[e.session_id] = result.state
        decoded_alerts += [a.id for a in result.alerts]
    assert alerts and decoded_alerts == alerts
    assert {k: s.to_bytes() for k, s in decoded.items()} == {
        k: s.to_bytes() for k, s in states.items()
    }
    assert any(s.dedup and s.snapshots and s.moments for s in states.values())


def test_a_click_without_coordinates_keeps_its_nan() -> None:
    d = Driver()
    d.send("page_view", 0, "/products/1")
    d.send("click", 1000, target="button#pay")
    assert d.state is not None and has_nan(d.state)
    values, _ = d.state.to_parts()
    assert b"NaN" not in orjson.dumps(values)  # standard JSON, any library reads it
    back = state_codec.decode(state_codec.encode(d.state))
    assert has_nan(back)
    assert back.to_bytes() == d.state.to_bytes()


def test_states_written_by_the_reference_codec_are_read() -> None:
    """An older release left zlib JSON states in Redis: an upgraded worker reads them."""
    states, _ = run(simulated())
    for state in states.values():
        assert state_codec.decode(state.to_bytes()).to_bytes() == state.to_bytes()


def test_the_codec_keeps_states_within_the_reference_size_budget() -> None:
    """Closed sessions' states: at most 15% over the reference's size (zstd
    at acceleration 1 trades ~10% of size for half the compression time,
    see ZSTD_PARAMETERS), under 2 KB on average and 4 KB at most."""
    states, _ = run(simulated())
    fast = [len(state_codec.encode(s)) for s in states.values()]
    reference = [len(s.to_bytes()) for s in states.values()]
    assert sum(fast) <= 1.15 * sum(reference)
    assert sum(fast) / len(fast) < 2048
    assert max(fast) < 4096


def _framed(values: object, tail: bytes = b"") -> bytes:
    head = orjson.dumps(values)
    raw = struct.pack("<I", len(head)) + head + tail
    return state_codec.MAGIC + zstandard.ZstdCompressor().compress(raw)


def _parts() -> tuple[list[object], bytes]:
    return SessionState("x", dedup={1: 5, 2: 6}, start_ts=5).to_parts()


@pytest.mark.parametrize(
    "make",
    [
        lambda: state_codec.MAGIC,
        lambda: state_codec.MAGIC + b"not zstd",
        lambda: state_codec.MAGIC + zstandard.ZstdCompressor().compress(b"\x01"),
        lambda: _framed({"not": "a list"}),
        lambda: _framed([PARTS_VERSION + 1, *_parts()[0][1:]], _parts()[1]),
        lambda: _framed(_parts()[0][:-1], _parts()[1]),
        lambda: _framed(_parts()[0], _parts()[1][:-3]),  # the ring cut short
        lambda: _framed(_parts()[0], _parts()[1] + b"\0\0\0\0"),  # bytes left over
        lambda: b"\x78\x9c not zlib either",
        lambda: b"",
    ],
)
def test_foreign_or_damaged_blobs_raise_value_error(make: object) -> None:
    with pytest.raises(ValueError):
        state_codec.decode(make())  # type: ignore[operator]


def test_the_parts_layout_is_refused_by_the_reference_decoder() -> None:
    """A parts list is not a reference blob: the version tells them apart."""
    import json
    import zlib

    values, _ = _parts()
    with pytest.raises(ValueError, match="version"):
        SessionState.from_bytes(zlib.compress(json.dumps(values).encode()))


def test_a_vector_cut_short_is_refused() -> None:
    d = Driver()
    for i in range(12):
        d.send("page_view", i * 4000, f"/products/{i}")
    assert d.state is not None and d.state.snapshots
    values, tail = d.state.to_parts()
    with pytest.raises(ValueError, match=r"short|malformed"):
        SessionState.from_parts(values, tail[:-4])
    assert SessionState.from_parts(values, tail).to_bytes() == d.state.to_bytes()


def test_a_lone_surrogate_from_a_prop_is_stored_and_read_back() -> None:
    """orjson refuses lone surrogates, which the parser lets through in
    props (a click's target): the codec falls back to the standard library
    instead of failing the batch."""
    state = SessionState("s", click_burst=[(5, 1.0, 2.0, "button\ud800")])
    state.field_focus["email\udfff"] = 7
    back = state_codec.decode(state_codec.encode(state))
    assert back.click_burst == state.click_burst
    assert back.field_focus == state.field_focus


def test_non_finite_floats_come_back_as_nan_not_none() -> None:
    state = SessionState("s", trust=float("nan"), trust_peak=float("inf"))
    state.friction_recent = [(5, float("nan")), (6, 0.5)]
    back = state_codec.decode(state_codec.encode(state))
    assert math.isnan(back.trust) and math.isnan(back.trust_peak)
    assert math.isnan(back.friction_recent[0][1]) and back.friction_recent[1] == (6, 0.5)
    assert back.page_max_scroll == 0.0 and back.scroll_pct == -1.0


def test_a_frame_claiming_a_huge_size_or_carrying_extra_bytes_is_refused() -> None:
    blob = state_codec.encode(SessionState("s"))
    with pytest.raises(ValueError):
        state_codec.decode(blob + b"trailing")
    big = zstandard.ZstdCompressor(level=1).compress(b"\0" * (state_codec.MAX_RAW_BYTES + 1))
    with pytest.raises(ValueError, match="bytes"):
        state_codec.decode(state_codec.MAGIC + big)
