"""The session state's bytes in Redis: the core's binary-tail layout, written
with orjson and zstandard.

The worker saves every state an event touched, so the codec runs once per
event on the live path. The core's reference codec
(:meth:`~detectors.session.SessionState.to_bytes`: standard-library JSON,
base64 for the binary fields, zlib) took ~150 µs a state. This one writes
:meth:`~detectors.session.SessionState.to_parts`: the positional fields as
orjson, the dedup ring and the float32 vectors as raw bytes, then zstd's fast
strategy with small tables (:data:`ZSTD_PARAMETERS`). On simulated
mid-session states it encodes ~3x as fast as the reference, for ~6% more
bytes (``benchmarks/bench_state_codec.py`` prints both).

A blob is :data:`MAGIC`, then a zstd frame of: the JSON's length (4 bytes,
little endian), the JSON, the binary tail. :func:`decode` also reads the
reference codec's zlib blobs (a zlib stream never starts with :data:`MAGIC`),
so the states an older release left in Redis keep working after an upgrade.
"""

from __future__ import annotations

import json
import struct
import threading

import orjson
import zstandard

from detectors.session import SessionState

#: The first bytes of a blob of this codec. A zlib stream starts with a CMF
#: byte whose low nibble is 8 (deflate), so 0xD5 is never one.
MAGIC = b"\xd5\x05"
#: zstd parameters: the fast strategy with acceleration 1 (``target_length``,
#: what the negative levels set) and tables sized for a state (raw 2.3 KB
#: mean on live traffic, p99 4.5 KB) instead of for any input. Level 1
#: clears a 16K-entry hash table per state; a 2K-entry one took 16 µs a
#: state instead of 23 µs for the same size, and acceleration 1 takes 9 µs
#: for 8% more bytes (1,102 B instead of 1,019 B mean on 5,324 states of
#: ``disengage simulate --kafka``'s traffic at 3,300 events/s, 2026-11-30;
#: acceleration 4 took no less time for 27% more bytes). A larger state still
#: compresses, matching less far back.
ZSTD_PARAMETERS = zstandard.ZstdCompressionParameters(
    window_log=14,
    hash_log=11,
    chain_log=11,
    search_log=1,
    min_match=5,
    target_length=1,
    strategy=zstandard.STRATEGY_FAST,
)

#: The largest decoded blob accepted (bytes): a state is a few KB, so a frame
#: header claiming more is damage, refused before anything is allocated.
MAX_RAW_BYTES = 1 << 20

_LENGTH = struct.Struct("<I")
_local = threading.local()  # zstd contexts are not thread-safe: one per thread


def _contexts() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    try:
        return _local.contexts  # type: ignore[no-any-return]
    except AttributeError:
        _local.contexts = (
            zstandard.ZstdCompressor(compression_params=ZSTD_PARAMETERS),
            zstandard.ZstdDecompressor(),
        )
        return _local.contexts  # type: ignore[no-any-return]


def encode(state: SessionState) -> bytes:
    """The bytes to store for ``state``.

    >>> s = SessionState("abc", start_ts=1, last_ts=2, dedup={7: 2})
    >>> blob = encode(s)
    >>> blob[:2] == MAGIC, decode(blob) == s
    (True, True)
    """
    values, tail = state.to_parts()
    try:
        head = orjson.dumps(values)
    except TypeError:
        # a string orjson refuses (a lone surrogate from a prop, say): the
        # standard library escapes it, and decode falls back to it as well
        head = json.dumps(values, separators=(",", ":")).encode()
    return MAGIC + _contexts()[0].compress(_LENGTH.pack(len(head)) + head + tail)


def decode(blob: bytes) -> SessionState:
    """The state of a stored blob, of this codec or the core's reference
    one; raises ``ValueError`` on anything else."""
    if not blob.startswith(MAGIC):
        return SessionState.from_bytes(blob)
    frame = blob[len(MAGIC) :]
    try:
        declared = zstandard.frame_content_size(frame)
        if not 0 <= declared <= MAX_RAW_BYTES:
            raise ValueError(f"a frame of {declared} bytes")
        raw = _contexts()[1].decompress(frame, allow_extra_data=False)
        (size,) = _LENGTH.unpack_from(raw)
        text = raw[_LENGTH.size : _LENGTH.size + size]
        if len(text) != size:
            raise ValueError("the JSON is cut short")
        try:
            values = orjson.loads(text)
        except orjson.JSONDecodeError:
            values = json.loads(text)  # written by the standard library (see encode)
    except (zstandard.ZstdError, struct.error, ValueError) as exc:
        raise ValueError(f"not a session state: {exc}") from None
    return SessionState.from_parts(values, raw[_LENGTH.size + size :])
