"""The worker's side of model versions: find the version to serve, load it off
the batch path, hand it over between batches.

:meth:`ModelFeed.poll` runs on a timer. It asks the registry which version to
serve (the pinned one, else the latest: one Redis round trip) and, when that
changed, reads and unpickles it in a thread, so a batch never waits for it.
:meth:`ModelFeed.take` hands the loaded version to the batch processor, which
adopts it before its next batch (:meth:`~stream.worker.pipeline.BatchProcessor.process`):
every event of a batch is scored by one version, and every alert says which.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass
from typing import Any

from detectors.models import DetectorModels
from stream.metrics import Metrics
from stream.model_registry import ModelRegistry, decompress
from stream.worker.faults import Fault

log = logging.getLogger("disengage.models")


@dataclass(frozen=True, slots=True)
class LoadedVersion:
    """A published version, unpickled: ``learned`` for :meth:`DetectorModels.adopt`."""

    number: int
    created_ms: int
    learned: dict[str, Any]

    @property
    def tag(self) -> str:
        return f"v{self.number}"


class ModelFeed:
    """Polls the registry; holds the newest loaded version until taken."""

    def __init__(self, registry: ModelRegistry, metrics: Metrics) -> None:
        self.registry = registry
        self.metrics = metrics
        #: the version last handed over (``None``: none yet)
        self.current: LoadedVersion | None = None
        self._pending: LoadedVersion | None = None
        self._failed: int | None = None  # a version that could not be loaded
        self.fault = Fault("Model load", log)

    async def poll(self) -> LoadedVersion | None:
        """Load the version to serve when it is new; returns it, else ``None``."""
        try:
            number = await self.registry.serving()
            known = self._pending or self.current
            if number is None or (known is not None and known.number == number):
                return None
            if number == self._failed:
                return None  # logged once; a newer version is tried when published
            meta = await self.registry.version(number)
            blob = await self.registry.load(number)
            if meta is None or blob is None:
                raise LookupError(f"model version {number} is not in the registry")
            learned = await asyncio.to_thread(_unpack, blob)
        except ValueError as exc:  # incompatible format or River version
            self._failed = number
            self.metrics.model_loads.labels("failed").inc()
            log.error("cannot serve model version %s: %s", number, exc)
            return None
        except Exception as exc:
            self.metrics.model_loads.labels("failed").inc()
            self.fault.failed(exc, "loading the model version to serve")
            return None
        self.fault.ok()
        self.metrics.model_loads.labels("loaded").inc()
        loaded = LoadedVersion(number, meta.created_ms, learned)
        self._pending = loaded
        log.info(
            "model version %s loaded (%d sessions learned); served from the next batch",
            loaded.tag,
            meta.examples,
        )
        return loaded

    def take(self) -> LoadedVersion | None:
        """The version loaded since the last call, if any (it becomes :attr:`current`)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self.current = pending
            self.metrics.model_version.set(pending.number)
        return pending

    def age_s(self) -> float:
        """Seconds since the served version was published (0: none yet)."""
        if self.current is None:
            return 0.0
        return max(0.0, time.time() - self.current.created_ms / 1000)


def _unpack(blob: bytes) -> dict[str, Any]:
    """The learned models of a version, with the garbage collector off while
    they unpickle: the unpickling holds the GIL, and a full collection
    triggered by its tens of thousands of new objects stopped the worker's
    event loop for up to 140 ms (one load in four; 10-20 ms without it,
    measured on 2026-11-30 with a 1.6 MB version). The objects are
    long-lived, so nothing is lost by not collecting meanwhile."""
    data = decompress(blob)
    enabled = gc.isenabled()
    gc.disable()
    try:
        return DetectorModels.loads_learned(data)
    finally:
        if enabled:
            gc.enable()
