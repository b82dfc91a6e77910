"""Published model versions: the trainer writes them, the workers and
``disengage models`` read them.

A version is the learned models (:meth:`detectors.models.DetectorModels.dumps_learned`,
zlib-compressed) plus its metadata (:class:`ModelVersion`). Versions are
numbered 1, 2, ... by the trainer. The workers serve the *pinned* version when
one is pinned (``disengage models promote`` / ``rollback``), else the latest.

Redis keys (``<ns>`` is the pipeline's namespace, the input topic's name;
``{<ns>}`` is a Redis Cluster hash tag, so one transaction covers them all):

* ``dg:model:{<ns>}:<n>``: the learned models of version ``n``;
* ``dg:models:{<ns>}``: hash of ``n`` to the version's metadata (JSON);
* ``dg:models:{<ns>}:latest``: the newest version published;
* ``dg:models:{<ns>}:pin``: the version pinned for serving (absent: latest);
* ``dg:trainer:{<ns>}``: the trainer's resume state (:class:`TrainerState`),
  and ``dg:trainer:{<ns>}:models`` the complete learned models it resumes
  with (a version's blob is the smaller serving form, without what only
  learning needs: :meth:`~detectors.models.DetectorModels.dumps_serving`).

A publish writes the blob, the metadata, ``latest`` and the trainer state in
one ``MULTI``/``EXEC``: a reader never sees a version without its models, and
a restarted trainer resumes exactly where the version it loads left off. On a
Redis Cluster (``DISENGAGE_REDIS_CLUSTER``) redis-py's cluster pipeline sends
the same ``MULTI``/``EXEC`` to the node owning the slot of ``{<ns>}``, and
refuses a transaction whose keys span slots (``CrossSlotTransactionError``).
The trainer also produces each version to the compacted models topic
(:func:`pack_snapshot`), from which it restores when Redis has lost them.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import redis.asyncio as aioredis
import zstandard

from detectors.trainer import Position

#: zstd level of the published blobs. Pickled River models barely compress:
#: a trainer snapshot of 13.5 MB (3,000 sessions of live simulated traffic)
#: took 346 ms with zlib at level 1 (9.9 MB), the format before, and 31 ms
#: with zstd at level 1 (9.7 MB), measured on 2026-11-30. The trainer
#: compresses one every ``DISENGAGE_TRAINER_PUBLISH_S``, on the cores the
#: workers use.
COMPRESSION_LEVEL = 1
#: The first bytes of a zstd frame. A zlib stream cannot start with them
#: (its two header bytes, read as a big-endian number, are a multiple of 31).
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _keys(ns: str) -> dict[str, str]:
    tag = f"{{{ns}}}"
    return {
        "meta": f"dg:models:{tag}",
        "latest": f"dg:models:{tag}:latest",
        "pin": f"dg:models:{tag}:pin",
        "trainer": f"dg:trainer:{tag}",
        "trainer_models": f"dg:trainer:{tag}:models",
    }


def model_key(ns: str, number: int) -> str:
    return f"dg:model:{{{ns}}}:{number}"


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """What ``disengage models list`` shows of a version. ``offset``: the
    next training-topic offset, so the version covers every example before it;
    ``examples``: sessions learned in total; the AUCs are the progressive
    (predict first, then learn) ROC-AUCs over the last 5000 labelled
    snapshots or moments, ``None`` until enough outcomes of both kinds."""

    number: int
    created_ms: int
    offset: int
    examples: int
    trust_auc: float | None
    hazard_auc: float | None
    serving: str  # the trust learner serving: "forest" or "linear"
    size: int  # bytes, compressed
    #: the trust champion's kind (:attr:`detectors.trust.TrustModel.kind`)
    champion: str = "online"
    #: the challenger's kind, ``None`` without one
    challenger: str | None = None
    #: (champion, challenger) ROC-AUC over the arena's window at its last comparison
    window_auc: tuple[float, float] | None = None
    promotions: int = 0  # challenger promotions so far

    @property
    def tag(self) -> str:
        """The name alerts carry in ``model_version``."""
        return f"v{self.number}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def from_json(text: str | bytes) -> ModelVersion:
        fields = json.loads(text)
        if fields.get("window_auc") is not None:
            fields["window_auc"] = tuple(fields["window_auc"])
        return ModelVersion(**fields)


@dataclass(slots=True)
class TrainerState:
    """Where the trainer stands: the version its models are, and its
    :class:`~detectors.trainer.Position`: the next training-topic offset to
    read, the ids of the examples learned most recently (oldest first)
    against copies re-produced after a crash, the input partitions' closure
    marks and the release watermark, and the offsets of the examples it held
    (read again at a restart). A state of an earlier release has no marks:
    its trainer had learned everything it read."""

    version: int = 0
    offset: int = 0
    recent_ids: list[str] = field(default_factory=list)
    marks: dict[int, int | None] = field(default_factory=dict)
    partitions: int = 0
    watermark: int | None = None
    held: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)

    @staticmethod
    def at(version: int, position: Position) -> TrainerState:
        return TrainerState(version, **asdict(position))

    @property
    def position(self) -> Position:
        return Position(**{f.name: getattr(self, f.name) for f in fields(Position)})

    def to_bytes(self) -> bytes:
        data = asdict(self)
        data["marks"] = {str(p): ts for p, ts in self.marks.items()}
        return json.dumps(data, separators=(",", ":")).encode()

    @staticmethod
    def from_bytes(blob: bytes) -> TrainerState:
        data = json.loads(blob)
        watermark = data.get("watermark")
        return TrainerState(
            int(data["version"]),
            int(data["offset"]),
            list(data["recent_ids"]),
            {
                int(p): None if ts is None else int(ts)
                for p, ts in (data.get("marks") or {}).items()
            },
            int(data.get("partitions") or 0),
            None if watermark is None else int(watermark),
            [int(o) for o in data.get("held") or ()],
            [int(o) for o in data.get("ready") or ()],
        )


def pack_snapshot(state: TrainerState, learned: bytes) -> bytes:
    """One record of the models topic: the trainer state and the learned
    models (already compressed), length-prefixed."""
    head = state.to_bytes()
    return struct.pack(">I", len(head)) + head + learned


def unpack_snapshot(blob: bytes) -> tuple[TrainerState, bytes]:
    """Inverse of :func:`pack_snapshot`; ``ValueError`` when malformed."""
    if len(blob) < 4:
        raise ValueError("model snapshot too short")
    (size,) = struct.unpack(">I", blob[:4])
    try:
        state = TrainerState.from_bytes(blob[4 : 4 + size])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"malformed model snapshot: {exc}") from exc
    return state, blob[4 + size :]


def compress(blob: bytes) -> bytes:
    """A published blob: a zstd frame (with its content size)."""
    return zstandard.ZstdCompressor(level=COMPRESSION_LEVEL).compress(blob)


def decompress(blob: bytes) -> bytes:
    """Inverse of :func:`compress`; also reads the zlib blobs of earlier
    releases (versions and trainer snapshots published before an upgrade).
    Raises ``zlib.error`` or ``zstandard.ZstdError`` on anything else."""
    if blob.startswith(ZSTD_MAGIC):
        return zstandard.ZstdDecompressor().decompress(blob)
    return zlib.decompress(blob)


class ModelRegistry:
    """The versions of one pipeline (namespace ``ns``) in Redis."""

    def __init__(self, client: aioredis.Redis | Any, ns: str) -> None:
        self.client = client
        self.ns = ns
        self.keys = _keys(ns)

    async def publish(
        self,
        version: ModelVersion,
        serving: bytes,
        state: TrainerState,
        keep: int,
        *,
        learned: bytes | None = None,
    ) -> list[int]:
        """Store ``version`` as the latest, in one transaction: its compressed
        ``serving`` models (what the workers load), and as the trainer's resume
        point its ``state`` with its complete ``learned`` models (``None``:
        ``serving`` is complete). Then delete the versions older than the
        ``keep`` newest, except a pinned one. Returns the numbers deleted."""
        k = self.keys
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(model_key(self.ns, version.number), serving)
            pipe.hset(k["meta"], str(version.number), version.to_json())
            pipe.set(k["latest"], str(version.number))
            pipe.set(k["trainer"], state.to_bytes())
            pipe.set(k["trainer_models"], serving if learned is None else learned)
            await pipe.execute()
        return await self._prune(keep)

    async def _prune(self, keep: int) -> list[int]:
        numbers = sorted(await self.numbers())
        pinned = await self.pinned()
        old = [n for n in numbers[: max(0, len(numbers) - keep)] if n != pinned]
        if old:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(*(model_key(self.ns, n) for n in old))
                pipe.hdel(self.keys["meta"], *(str(n) for n in old))
                await pipe.execute()
        return old

    async def numbers(self) -> list[int]:
        return sorted(int(n) for n in await self.client.hkeys(self.keys["meta"]))

    async def versions(self) -> list[ModelVersion]:
        """Every stored version, oldest first."""
        raw = await self.client.hgetall(self.keys["meta"])
        return sorted((ModelVersion.from_json(v) for v in raw.values()), key=lambda v: v.number)

    async def version(self, number: int) -> ModelVersion | None:
        raw = await self.client.hget(self.keys["meta"], str(number))
        return None if raw is None else ModelVersion.from_json(raw)

    async def latest(self) -> int | None:
        raw = await self.client.get(self.keys["latest"])
        return None if raw is None else int(raw)

    async def pinned(self) -> int | None:
        raw = await self.client.get(self.keys["pin"])
        return None if raw is None else int(raw)

    async def serving(self) -> int | None:
        """The version workers serve: the pinned one, else the latest (one round trip)."""
        latest, pin = await self.client.mget([self.keys["latest"], self.keys["pin"]])
        chosen = pin if pin is not None else latest
        return None if chosen is None else int(chosen)

    async def load(self, number: int) -> bytes | None:
        """The compressed learned models of version ``number`` (``None``: gone)."""
        blob = await self.client.get(model_key(self.ns, number))
        return None if blob is None else _as_bytes(blob)

    async def pin(self, number: int) -> None:
        """Serve ``number`` until unpinned; ``KeyError`` when it is not stored."""
        if await self.version(number) is None:
            raise KeyError(number)
        await self.client.set(self.keys["pin"], str(number))

    async def unpin(self) -> None:
        """Serve the latest version again."""
        await self.client.delete(self.keys["pin"])

    async def trainer_models(self) -> bytes | None:
        """The complete learned models (compressed) of the trainer's resume state."""
        blob = await self.client.get(self.keys["trainer_models"])
        return None if blob is None else _as_bytes(blob)

    async def trainer_state(self) -> TrainerState | None:
        raw = await self.client.get(self.keys["trainer"])
        return None if raw is None else TrainerState.from_bytes(_as_bytes(raw))


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):  # a client made with decode_responses
        raise TypeError("the model registry needs a Redis client without decode_responses")
    raise TypeError(f"unexpected Redis value {type(value).__name__}")
