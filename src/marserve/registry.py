"""ModelRegistry: what is loaded — model name and version -> handle (pool, batchers, state)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marserve.archive import Manifest
from marserve.batching import DynamicBatcher
from marserve.errors import MarserveError, ModelNotFound, ServiceUnavailable, from_http_status
from marserve.observability.model_state import BatchObserver, ModelObserver, ModelSnapshot
from marserve.settings import ModelConfig
from marserve.signature import Signature
from marserve.workers.messages import Batch, ItemResult
from marserve.workers.pool import Worker, WorkerPool, WorkerState

_batch_ids = itertools.count(1)


@dataclass(slots=True)
class Job:
    """One request for the handler: TorchServe's input dict plus its id and headers."""

    data: dict[str, Any]
    request_id: str
    headers: dict[str, str]
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass(slots=True)
class ModelHandle:
    """A loaded model version: its settings, archive, worker pool and one batcher per verb."""

    name: str
    version: str
    config: ModelConfig
    manifest: Manifest
    model_dir: Path
    pool: WorkerPool
    queue_limit: int
    batchers: dict[str, DynamicBatcher[Worker, Job, ItemResult]] = field(default_factory=dict)
    metrics: BatchObserver | None = None  # set when registered with a server's metrics
    signature: Signature = field(init=False)

    def __post_init__(self) -> None:
        self.pool.pending = lambda: self.queue_depth
        self.signature = Signature(self.config.yaml_config)

    @property
    def ready(self) -> bool:
        return self.pool.ready

    @property
    def busy(self) -> bool:
        """Requests are queued or running."""
        return any(not b.idle for b in self.batchers.values())

    def batcher(self, verb: str) -> DynamicBatcher[Worker, Job, ItemResult]:
        batcher = self.batchers.get(verb)
        if batcher is None:

            async def run_batch(worker: Worker, jobs: list[Job]) -> list[ItemResult]:
                return await self._run(worker, verb, jobs)

            batcher = DynamicBatcher(
                self.pool,
                run_batch,
                max_size=self.config.batch_size,
                max_delay=self.config.max_batch_delay_ms / 1000.0,
                queue_limit=self.queue_limit,
            )
            self.pool.on_freed(batcher.wake)
            batcher.start()
            self.batchers[verb] = batcher
        return batcher

    async def _run(self, worker: Worker, verb: str, jobs: list[Job]) -> list[ItemResult]:
        batch = Batch(
            batch_id=next(_batch_ids),
            verb=verb,
            items=[job.data for job in jobs],
            request_ids=[job.request_id for job in jobs],
            headers=[job.headers for job in jobs],
        )
        metrics = self.metrics
        started = time.perf_counter()
        if metrics is not None:
            metrics.observe_dispatch([started - job.queued_at for job in jobs])
        result = await self.pool.run(worker, batch)
        if metrics is not None:
            metrics.observe_result(result, verb, time.perf_counter() - started)
        if result.results is None:
            raise from_http_status(result.error_message, result.error_status)
        return result.results

    @property
    def queue_depth(self) -> int:
        return sum(b.depth for b in self.batchers.values())

    def snapshot(self) -> ModelSnapshot:
        """This version's state for the metrics (read at scrape time)."""
        workers = list(self.pool.workers)
        states = {state.value: 0 for state in WorkerState}
        loads: list[tuple[str, float]] = []
        for worker in workers:
            states[worker.state.value] += 1
            seconds = worker.load_seconds
            if worker.alive and seconds is not None:
                loads.append((f"W-{worker.load.worker_index}-{self.name}_{self.version}", seconds))
        return ModelSnapshot(
            self.name, self.version, self.queue_depth, self.ready, self.pool.restarts,
            states, tuple(loads),
        )  # fmt: skip

    async def drain(self, timeout_s: float) -> bool:
        """Wait for queued and running requests to finish; False when the time ran out."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.busy:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def stop(self) -> None:
        error = ServiceUnavailable(f"Model {self.name} was unloaded")
        for batcher in self.batchers.values():
            batcher.fail_pending(error)
            await batcher.stop()
        await self.pool.stop()


def _shown(name: str) -> str:
    return name if len(name) <= 100 else name[:100] + "..."


class ModelRegistry:
    """All loaded models, by name and version, with a default version per name."""

    def __init__(self) -> None:
        self._models: dict[str, dict[str, ModelHandle]] = {}
        self._defaults: dict[str, str] = {}
        # Called with each handle as it is added and removed (the server's metrics listen).
        self.on_add: list[Callable[[ModelHandle], None]] = []
        self.on_remove: list[Callable[[ModelHandle], None]] = []

    def add(self, handle: ModelHandle, *, default: bool) -> None:
        versions = self._models.setdefault(handle.name, {})
        if handle.version in versions:
            raise MarserveError(
                f"Model version {handle.version} is already registered for model {handle.name}",
                http_status=409,
            )
        versions[handle.version] = handle
        if default or handle.name not in self._defaults:
            self._defaults[handle.name] = handle.version
        for callback in self.on_add:
            callback(handle)

    def get(self, name: str, version: str | None = None) -> ModelHandle:
        versions = self._models.get(name)
        if not versions:
            raise ModelNotFound(f"Model with name {_shown(name)} does not exist.")
        if version is None:
            return versions[self._defaults[name]]
        handle = versions.get(version)
        if handle is None:
            raise ModelNotFound(
                f"Model version: {_shown(version)} does not exist for model: {_shown(name)}"
            )
        return handle

    def remove(self, name: str, version: str | None = None) -> ModelHandle:
        handle = self.get(name, version)
        versions = self._models[name]
        del versions[handle.version]
        if not versions:
            del self._models[name]
            del self._defaults[name]
        elif self._defaults[name] == handle.version:
            self._defaults[name] = sorted(versions)[-1]
        for callback in self.on_remove:
            callback(handle)
        return handle

    def watch(self, observer: ModelObserver) -> None:
        """Tell ``observer`` of every model version, now and as they come and go."""

        def added(handle: ModelHandle) -> None:
            handle.metrics = observer.model_added(handle.name, handle.version)

        self.on_add.append(added)
        self.on_remove.append(lambda handle: observer.model_removed(handle.name, handle.version))
        for handle in self:
            added(handle)

    def lookup(self, name: str, version: str | None) -> tuple[str, str] | None:
        """The name and version a request for ``name``/``version`` reaches, or None."""
        try:
            handle = self.get(name, version)
        except MarserveError:
            return None
        return handle.name, handle.version

    def snapshots(self) -> list[ModelSnapshot]:
        return [handle.snapshot() for handle in self]

    def set_default(self, name: str, version: str) -> None:
        self._defaults[name] = self.get(name, version).version

    def default_version(self, name: str) -> str:
        self.get(name)
        return self._defaults[name]

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> list[ModelHandle]:
        self.get(name)
        return [self._models[name][v] for v in sorted(self._models[name])]

    def __iter__(self) -> Iterator[ModelHandle]:
        for name in sorted(self._models):
            yield from self._models[name].values()

    def __len__(self) -> int:
        return sum(len(v) for v in self._models.values())
