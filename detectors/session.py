"""Per-session state: an explicit dataclass with a compact serialisation.

The state is everything the detector knows about one live session. It is
small (well under 2 KB serialised for a typical session), bounded (every list
has a cap) and survives a byte round trip exactly, so a Redis-backed worker and
the in-memory replay behave the same.

De-duplication is exact within a bounded window: ``dedup`` maps the 48-bit
hashes of the last ``dedup_capacity`` accepted events to their times. When
an entry is evicted (oldest arrival first), ``dedup_floor`` rises to its time,
so every accepted event newer than the floor is still in the ring; events at
or below the floor are refused as late. Repeated deliveries therefore never
change the state twice.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import operator
import struct
import zlib
from array import array
from dataclasses import dataclass, field, fields
from itertools import repeat
from typing import Any, ClassVar

from detectors.config import EVENT_TYPES, STAGE_INDEX
from detectors.signals import SIGNALS

#: Serialisation format version, first element of every encoded state.
#: Version 2 appended ``type_counts``, ``last_cart_ts``, ``stage_trail`` and
#: ``moments``; version 3 appended ``acked`` and ``alert_marks``; version 4
#: appended ``trust_marks`` and ``prefix_marks``. Older states still decode
#: (see :meth:`SessionState.from_bytes`).
STATE_VERSION = 4
#: Format version of :meth:`SessionState.to_parts` (the layout with a binary
#: tail); it shares its fields with :data:`STATE_VERSION`, so a new field
#: raises both.
PARTS_VERSION = 5
#: Fields each older version lacks (appended since), decoded as fresh.
_MISSING_FIELDS = {1: 8, 2: 4, 3: 2}

#: Event types in the order of ``SessionState.type_counts``: the types of
#: version 2 sorted, then the ones added since, so stored counts keep their places.
_V2_TYPES: tuple[str, ...] = tuple(sorted(EVENT_TYPES - {"intervention"}))
TYPE_ORDER: tuple[str, ...] = (*_V2_TYPES, "intervention")
#: Position of each event type in ``SessionState.type_counts``.
TYPE_INDEX: dict[str, int] = {t: i for i, t in enumerate(TYPE_ORDER)}
#: Stage indices kept in ``SessionState.stage_trail`` (the stages left most recently).
STAGE_TRAIL_CAP = 3
#: Hesitation moments kept in ``SessionState.moments`` (the most recent ones).
MOMENTS_CAP = 8


_RING = struct.Struct("<IHI")  # ts offset (ms, 32 bit), 48-bit hash as 16+32 bit
_BASE = struct.Struct("<q")  # base time of the ring (epoch ms)


def id_hash48(event_id: str) -> int:
    """48-bit hash of an event id (collision odds ~1e-12 within a 64-slot ring)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=6).digest(), "little")


def page_key(page: str | None, page_type: str | None) -> int:
    """32-bit key of a page (its path without query), for loop and revisit counts."""
    text = (page or page_type or "?").split("?", 1)[0].split("#", 1)[0].rstrip("/") or "/"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little")


@dataclass(slots=True)
class SessionState:
    """Everything known about one session. Times are epoch ms of event time.

    Counters only grow; lists are bounded by the config caps or by the
    constants named next to them.
    """

    sid: str
    user_hash: str | None = None
    start_ts: int = 0
    last_ts: int = 0
    n_events: int = 0
    outcome: str | None = None  # None while open; "converted" | "exit" | "timeout"
    closed_ts: int = 0
    # exact de-duplication window, see module docstring
    dedup: dict[int, int] = field(default_factory=dict)  # hash48 -> ts, arrival order
    dedup_floor: int = 0
    # journey
    stage: str = "discover"
    furthest: int = -1  # index in STAGE_ORDER, -1 before the first page
    stage_since: int = 0
    last_progress: int = 0
    regressions: int = 0
    skipped: int = 0
    revisits: int = 0
    stage_pages: list[int] = field(default_factory=lambda: [0] * len(STAGE_INDEX))
    stage_ms: list[int] = field(default_factory=lambda: [0] * len(STAGE_INDEX))
    n_pages: int = 0
    page: str | None = None
    page_type: str | None = None
    page_key: int = 0
    page_enter: int = 0
    prev_key: int = 0
    prev_enter: int = 0
    page_history: list[tuple[int, int]] = field(default_factory=list)  # (key, ts), cap 24
    # commerce
    carts: int = 0
    cart_removes: int = 0
    checkout_steps: int = 0
    searches: int = 0
    errors: int = 0
    # per-page activity, reset on every page view
    page_events: int = 0
    page_max_gap: int = 0
    page_reversals: int = 0
    page_max_scroll: float = 0.0
    page_friction: bool = False
    page_step: str | None = None
    # signal machinery
    click_burst: list[tuple[int, float, float, str]] = field(default_factory=list)
    rage_fired: bool = False
    last_click_ts: int = 0
    last_click_errored: bool = False
    scroll_pct: float = -1.0
    scroll_dir: int = 0
    reversal_ts: list[int] = field(default_factory=list)
    field_focus: dict[str, int] = field(default_factory=dict)  # cap 8 fields
    form_open: bool = False
    stall_fired: bool = False
    signal_counts: list[int] = field(default_factory=lambda: [0] * len(SIGNALS))
    friction_recent: list[tuple[int, float]] = field(default_factory=list)  # (ts, weight), cap 16
    # scores and alert policy
    trust: float = -1.0  # last trust score, -1 before the first
    trust_ts: int = 0  # event time of the last trust scoring
    trust_peak: float = 0.0
    trust_low: bool = False
    friction_high: bool = False
    trust_strikes: int = 0
    hes_high: bool = False
    hes_checked: int = 0
    episodes: list[int] = field(default_factory=lambda: [0, 0])  # hesitation, trust_loss
    last_alert: list[int] = field(default_factory=lambda: [0, 0])
    n_alerts: int = 0
    snapshots: list[tuple[int, array[float]]] = field(default_factory=list)  # float32
    # delivery outbox of the streaming shell: alerts (CloudEvents JSON) that
    # were decided but not yet confirmed on the alerts topic; written in the
    # same atomic write as the state, so a crash can neither lose nor
    # re-derive them (the core itself never reads it)
    outbox: list[str] = field(default_factory=list)
    snap_stride: int = 1  # a snapshot is taken every snap_stride-th event
    # version 2: events by type (TYPE_ORDER), the last basket add, the stages
    # left most recently (indices in STAGE_INDEX, oldest first, cap
    # STAGE_TRAIL_CAP), and the hesitation model's recent moments to label
    # at close ((ts, float32 features), cap MOMENTS_CAP)
    type_counts: list[int] = field(default_factory=lambda: [0] * len(TYPE_ORDER))
    last_cart_ts: int = 0
    stage_trail: list[int] = field(default_factory=list)
    moments: list[tuple[int, array[float]]] = field(default_factory=list)
    # version 3: when the page last acknowledged an intervention for each
    # session alert kind (epoch ms, as ``episodes``), and the uplift slice of
    # the visit's first alert ("kind/action", detectors.uplift; a list of at
    # most one, so a later format may keep more)
    acked: list[int] = field(default_factory=lambda: [0, 0])
    alert_marks: list[str] = field(default_factory=list)
    # version 4, for the console (detectors.trust_map): per trust-map key
    # (a stage, page type or signal as "s3", "p13", "g2") its occurrences,
    # the sum of the trust changes at its scored steps (1e-4 units) and their
    # number (at most TRUST_MARKS_CAP keys); and the last two power-of-two
    # event counts' [events, ms since the start, score in 1e-4 units]
    trust_marks: dict[str, list[int]] = field(default_factory=dict)
    prefix_marks: list[list[int]] = field(default_factory=list)

    _FIELD_NAMES: ClassVar[tuple[str, ...]]

    # ------------------------------------------------------------------ dedup
    def seen(self, id_hash: int) -> bool:
        """True when an event with this :func:`id_hash48` was accepted."""
        return id_hash in self.dedup

    def remember(self, id_hash: int, ts: int, capacity: int) -> None:
        """Record an accepted event; evict the oldest arrival beyond
        ``capacity`` and raise the floor to its time."""
        self.dedup[id_hash] = ts
        if len(self.dedup) > capacity:
            evicted = next(iter(self.dedup))
            self.dedup_floor = max(self.dedup_floor, self.dedup.pop(evicted))

    # ---------------------------------------------------------- serialisation
    def to_bytes(self) -> bytes:
        """Compact, versioned encoding: zlib-compressed positional JSON.

        The reference codec, standard library only (the worker's Redis store
        writes the faster :meth:`to_parts` layout instead). A click without
        coordinates keeps NaN in the state, which this JSON keeps as ``NaN``.

        >>> s = SessionState("abc", start_ts=1, last_ts=2)
        >>> SessionState.from_bytes(s.to_bytes()) == s
        True
        """
        values: list[Any] = [STATE_VERSION, *_FIELDS_GETTER(self)]
        values[_DEDUP_AT] = base64.b64encode(_ring_bytes(self.dedup)).decode()
        values[_SNAPSHOTS_AT] = _pack_vectors(self.snapshots)
        values[_MOMENTS_AT] = _pack_vectors(self.moments)
        raw = json.dumps(values, separators=(",", ":")).encode()
        return zlib.compress(raw, 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionState:
        """Inverse of :meth:`to_bytes`; raises ``ValueError`` on a foreign blob."""
        try:
            values = json.loads(zlib.decompress(data))
        except (zlib.error, ValueError) as exc:
            raise ValueError(f"not a session state: {exc}") from None
        if not isinstance(values, list) or not values or values[0] not in (1, 2, 3, STATE_VERSION):
            raise ValueError("unsupported session state version")
        names = cls._FIELD_NAMES
        missing = _MISSING_FIELDS.get(values[0], 0)
        if missing and len(values) == len(names) + 1 - missing:
            # a state written by an older version: the fields appended since
            # start fresh
            values = [*values, *(_FIELDS_GETTER(cls(""))[-missing:])]
            if values[0] == 1:
                # its trust snapshots have the old feature count, so they are
                # dropped (the session's outcome is then not learned)
                values[_SNAPSHOTS_AT] = []
                values[_MOMENTS_AT] = []
        if len(values) != len(names) + 1:
            raise ValueError("session state has the wrong number of fields")
        try:
            ring = base64.b64decode(values[_DEDUP_AT], validate=True)
            return cls._from_values(
                values,
                _unpack_ring(ring),
                _unpack_vectors(values[_SNAPSHOTS_AT]),
                _unpack_vectors(values[_MOMENTS_AT]),
            )
        except (TypeError, ValueError, KeyError, struct.error, binascii.Error) as exc:
            raise ValueError(f"malformed session state: {exc}") from None

    def to_parts(self) -> tuple[list[Any], bytes]:
        """The state as a JSON-ready list and a binary tail, for a codec
        that brings its own JSON and compression (the worker's Redis store,
        :mod:`stream.state_codec`).

        The list is :meth:`to_bytes`'s with the format :data:`PARTS_VERSION`
        first. The tail holds the dedup ring (its times as signed and its
        hashes as unsigned 64-bit native integers, copied by C, which a
        compressor shrinks back) then the snapshots' and the moments' float32
        vectors as raw bytes (no base64: a third fewer bytes to compress); the
        list keeps the ring's entry count and each vector's time and length.
        A missing click coordinate (NaN) is ``None``, so any JSON library
        writes the list the same way; :meth:`from_parts` also reads ``None``
        in a float field as NaN (a library that writes non-finite floats as
        null). The list holds the state's own lists: serialise it before the
        state changes.

        >>> s = SessionState("abc", start_ts=1, last_ts=2, dedup={7: 2})
        >>> values, tail = s.to_parts()
        >>> values[0], len(tail)
        (5, 16)
        >>> SessionState.from_parts(values, tail) == s
        True
        """
        values: list[Any] = [PARTS_VERSION, *_FIELDS_GETTER(self)]
        dedup = self.dedup
        values[_DEDUP_AT] = len(dedup)
        values[_SNAPSHOTS_AT] = [[ts, len(vec)] for ts, vec in self.snapshots]
        values[_MOMENTS_AT] = [[ts, len(vec)] for ts, vec in self.moments]
        if self.click_burst:
            values[_CLICKS_AT] = [
                (ts, None if x != x else x, None if y != y else y, target)
                for ts, x, y, target in self.click_burst
            ]
        n = len(dedup)
        # one C call for the ring (native 64-bit integers, the same bytes as
        # two arrays' tobytes, ~25% faster), then the vectors' buffers
        parts = [_ring_native(n).pack(*dedup.values(), *dedup)]
        parts += [vec.tobytes() for _, vec in self.snapshots]
        parts += [vec.tobytes() for _, vec in self.moments]
        return values, b"".join(parts)

    @classmethod
    def from_parts(cls, values: Any, tail: bytes) -> SessionState:
        """Inverse of :meth:`to_parts`; raises ``ValueError`` on foreign parts."""
        if not isinstance(values, list) or not values or values[0] != PARTS_VERSION:
            raise ValueError("unsupported session state parts version")
        if len(values) != len(cls._FIELD_NAMES) + 1:
            raise ValueError("session state has the wrong number of fields")
        try:
            view = memoryview(tail)
            entries = values[_DEDUP_AT]
            times, hashes = array("q"), array("Q")
            times.frombytes(view[: 8 * entries])
            hashes.frombytes(view[8 * entries : 16 * entries])
            if len(hashes) != entries or len(times) != entries:
                raise ValueError("the binary tail is too short")
            dedup = dict(zip(hashes, times, strict=True))
            at = 16 * entries
            vectors: list[list[tuple[int, array[float]]]] = []
            for items in (values[_SNAPSHOTS_AT], values[_MOMENTS_AT]):
                out = []
                for ts, n in items:
                    vec = array("f")
                    vec.frombytes(view[at : at + 4 * n])
                    if len(vec) != n:
                        raise ValueError("the binary tail is too short")
                    at += 4 * n
                    out.append((int(ts), vec))
                vectors.append(out)
            if at != len(tail):
                raise ValueError("the binary tail is too long")
            values = list(values)  # the caller's list stays as it was
            clicks = values[_CLICKS_AT]
            if clicks:
                values[_CLICKS_AT] = [
                    (ts, _NAN if x is None else x, _NAN if y is None else y, target)
                    for ts, x, y, target in clicks
                ]
            # a JSON library writes a non-finite float as null: back to NaN
            for at in _FLOATS_AT:
                if values[at] is None:
                    values[at] = _NAN
            friction = values[_FRICTION_AT]
            if friction and any(w is None for _, w in friction):
                values[_FRICTION_AT] = [(ts, _NAN if w is None else w) for ts, w in friction]
            return cls._from_values(values, dedup, vectors[0], vectors[1])
        except (TypeError, ValueError, KeyError, struct.error) as exc:
            raise ValueError(f"malformed session state: {exc}") from None

    @classmethod
    def _from_values(
        cls,
        values: list[Any],
        dedup: dict[int, int],
        snapshots: list[tuple[int, array[float]]],
        moments: list[tuple[int, array[float]]],
    ) -> SessionState:
        """The state of a decoded positional list (version first), with its
        binary fields already unpacked."""
        kwargs: dict[str, Any] = dict(zip(cls._FIELD_NAMES, values[1:], strict=True))
        kwargs["dedup"] = dedup
        # a state stored before a signal was registered counts none of it
        counts = kwargs["signal_counts"]
        kwargs["signal_counts"] = counts + [0] * (len(SIGNALS) - len(counts))
        for name in ("page_history", "friction_recent", "click_burst"):
            kwargs[name] = [tuple(item) for item in kwargs[name]]
        kwargs["snapshots"] = snapshots
        kwargs["moments"] = moments
        counts = kwargs["type_counts"]
        kwargs["type_counts"] = counts + [0] * (len(TYPE_ORDER) - len(counts))
        return cls(**kwargs)


def _ring_bytes(ring: dict[int, int]) -> bytes:
    """The dedup ring packed: its base time (8 bytes) then, per entry, a
    32-bit ms offset from it and the 48-bit hash as 16 + 32 bits (10 bytes an
    entry instead of ~30 as JSON), packed by C-level maps; empty for an empty
    ring."""
    if not ring:
        return b""
    times = ring.values()
    base = min(times)
    try:  # the entries packed by C-level maps (about twice as fast as a comprehension)
        body = b"".join(
            map(
                _RING.pack,
                map(operator.sub, times, repeat(base)),
                map(operator.and_, ring, repeat(0xFFFF)),
                map(operator.rshift, ring, repeat(16)),
            )
        )
    except struct.error:  # an offset beyond 32 bits (49 days): clamped
        flat = [
            x for h, ts in ring.items() for x in (min(ts - base, 0xFFFFFFFF), h & 0xFFFF, h >> 16)
        ]
        body = _ring_struct(len(ring)).pack(*flat)
    return _BASE.pack(base) + body


def _unpack_ring(data: bytes | memoryview) -> dict[int, int]:
    """Inverse of :func:`_ring_bytes`."""
    if not data:
        return {}
    (base,) = _BASE.unpack_from(data)
    n = (len(data) - _BASE.size) // _RING.size
    if _BASE.size + n * _RING.size != len(data):
        raise ValueError("the dedup ring has a partial entry")
    flat = _ring_struct(n).unpack_from(data, _BASE.size)
    return {flat[i + 1] | (flat[i + 2] << 16): base + flat[i] for i in range(0, 3 * n, 3)}


def _pack_vectors(items: list[tuple[int, array[float]]]) -> list[list[Any]]:
    return [[ts, base64.b64encode(vec.tobytes()).decode()] for ts, vec in items]


def _unpack_vectors(items: list[list[Any]]) -> list[tuple[int, array[float]]]:
    return [(int(ts), array("f", base64.b64decode(vec, validate=True))) for ts, vec in items]


@functools.lru_cache(maxsize=256)
def _ring_native(n: int) -> struct.Struct:
    """:meth:`SessionState.to_parts`'s ring layout for ``n`` entries: the
    times as signed, then the hashes as unsigned native 64-bit integers."""
    return struct.Struct(f"@{n}q{n}Q")


@functools.lru_cache(maxsize=256)
def _ring_struct(n: int) -> struct.Struct:
    return struct.Struct("<" + "IHI" * n)


SessionState._FIELD_NAMES = tuple(f.name for f in fields(SessionState))
_FIELDS_GETTER = operator.attrgetter(*SessionState._FIELD_NAMES)
_DEDUP_AT = 1 + SessionState._FIELD_NAMES.index("dedup")
_SNAPSHOTS_AT = 1 + SessionState._FIELD_NAMES.index("snapshots")
_MOMENTS_AT = 1 + SessionState._FIELD_NAMES.index("moments")
_CLICKS_AT = 1 + SessionState._FIELD_NAMES.index("click_burst")
_FRICTION_AT = 1 + SessionState._FIELD_NAMES.index("friction_recent")
#: Positions of the float fields (a non-finite value is null in the parts' JSON).
_FLOATS_AT = tuple(1 + i for i, f in enumerate(fields(SessionState)) if f.type == "float")
_NAN = float("nan")
