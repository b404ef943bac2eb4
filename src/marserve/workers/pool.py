"""WorkerPool: one model's worker processes, their lifecycle, restarts with backoff, dispatch."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from marserve.errors import InternalError, RequestTimeout, ServiceUnavailable
from marserve.workers import wire
from marserve.workers.messages import Batch, BatchResult, Loaded, LoadModel
from marserve.workers.scaling import Load, ScalePolicy, ScaleState, decide
from marserve.workers.spawn import Spawned, WarmProcesses, spawn_process

__all__ = ["Spawned", "WarmProcesses", "Worker", "WorkerPool", "WorkerState", "spawn_process"]

log = logging.getLogger("marserve.workers")

BACKOFF_CAP_S = 60.0


def backoff_delays() -> itertools.chain[float]:
    """Fibonacci restart delays in seconds (0, 1, 1, 2, 3, 5, ...), capped."""
    a, b = 0.0, 1.0
    seq: list[float] = []
    while a < BACKOFF_CAP_S:
        seq.append(a)
        a, b = b, a + b
    return itertools.chain(seq, itertools.repeat(BACKOFF_CAP_S))


class WorkerState(str, enum.Enum):
    STARTING = "STARTING"
    READY = "READY"
    BUSY = "BUSY"
    DEAD = "DEAD"
    STOPPED = "STOPPED"


class WorkerLoadError(RuntimeError):
    """A worker could not load its model (the message comes from the worker).

    ``permanent`` when loading failed in a way a restart cannot change (the handler cannot be
    imported or resolved): waiting for such a worker is pointless."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


# A worker gets its next batch while it runs the current one, so it never waits for the front
# between two. Batches still grow under load: a batch for a busy worker fills up for as long as
# maxBatchDelay allows, and only one for an idle worker goes early (see ``DynamicBatcher``).
BATCHES_PER_WORKER = 2


@dataclass(slots=True)
class _InFlight:
    batch_id: int
    future: asyncio.Future[BatchResult]
    timeout_s: float


class Worker:
    """One worker process and the socket to it.

    Up to ``depth`` batches are in flight: the worker runs them one after another, but the
    next one already waits in its socket when the current one ends, so it never idles while
    the front is busy. ``responseTimeout`` counts from the moment a batch is at the head.
    """

    def __init__(
        self, load: LoadModel, startup_timeout_s: float, depth: int = BATCHES_PER_WORKER
    ) -> None:
        self.load = load
        self.startup_timeout_s = startup_timeout_s
        self.depth = depth
        self.state = WorkerState.STARTING
        self.pid: int | None = None
        self.device = ""
        self.started_at = time.monotonic()
        self.load_seconds: float | None = None  # how long loading the model took
        self.started_iso = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self.reserved = 0  # acquired for a batch that is not sent yet
        self.on_free: Callable[[], None] = lambda: None  # the pool's "capacity freed" signal
        self._pending: deque[_InFlight] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.state in (WorkerState.READY, WorkerState.BUSY)

    @property
    def in_flight(self) -> int:
        return len(self._pending) + self.reserved

    @property
    def has_room(self) -> bool:
        return self.alive and self.in_flight < self.depth

    async def start(self, spawned: Spawned | None = None) -> None:
        """Use a warm process (or spawn one), send it the model, wait until it has loaded."""
        self._process, self._reader, self._writer = spawned or await spawn_process()
        self.pid = self._process.pid
        self._writer.write(wire.encode(self.load))
        try:
            loaded = await asyncio.wait_for(wire.read_message(self._reader), self.startup_timeout_s)
        except (TimeoutError, wire.ConnectionClosed) as exc:
            await self.kill()
            raise WorkerLoadError(f"worker did not load the model: {exc!r}") from exc
        if not isinstance(loaded, Loaded) or loaded.error:
            await self.kill()
            raise WorkerLoadError(
                getattr(loaded, "error", "unexpected answer from worker"),
                permanent=bool(getattr(loaded, "permanent", False)),
            )
        self.device = loaded.device
        self.load_seconds = time.monotonic() - self.started_at
        self.state = WorkerState.READY
        self._read_task = asyncio.get_running_loop().create_task(self._read_results())

    async def run(self, batch: Batch, timeout_s: float) -> BatchResult:
        """Send a batch (after ``acquire``) and wait for its result."""
        self.reserved = max(0, self.reserved - 1)
        if not self.alive or self._writer is None:
            raise InternalError("The worker process died before it got the request")
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        self._pending.append(_InFlight(batch.batch_id, future, timeout_s))
        if len(self._pending) == 1:
            self._arm(timeout_s)
        self.state = WorkerState.BUSY
        self._writer.write(wire.encode(batch))
        return await future

    def _arm(self, timeout_s: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(timeout_s, self._timed_out, timeout_s)

    def _timed_out(self, timeout_s: float) -> None:
        head = self._pending.popleft()
        if not head.future.done():
            head.future.set_exception(
                RequestTimeout(f"Timed out after {timeout_s:g}s waiting for the model's response")
            )
        self._fail_pending(
            ServiceUnavailable(
                "The worker was replaced after another request timed out; retry",
                headers={"Retry-After": "1"},
            )
        )
        asyncio.get_running_loop().create_task(self.kill())

    def _fail_pending(self, error: Exception) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            entry = self._pending.popleft()
            if not entry.future.done():
                entry.future.set_exception(error)

    async def _read_results(self) -> None:
        assert self._reader is not None
        try:
            while True:
                message = await wire.read_message(self._reader)
                if not self._pending:
                    raise wire.ConnectionClosed("an answer nobody asked for")
                entry = self._pending.popleft()
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                if self._pending:
                    self._arm(self._pending[0].timeout_s)
                elif self.state is WorkerState.BUSY:
                    self.state = WorkerState.READY
                if not isinstance(message, BatchResult) or message.batch_id != entry.batch_id:
                    entry.future.set_exception(
                        InternalError("The worker sent an unexpected answer")
                    )
                    raise wire.ConnectionClosed("out of step")
                if not entry.future.done():
                    entry.future.set_result(message)
                self.on_free()
        except (wire.ConnectionClosed, ConnectionError):
            self._fail_pending(InternalError("The worker process died while handling the request"))
            await self.kill()

    async def wait(self) -> int:
        assert self._process is not None
        return await self._process.wait()

    async def stop(self) -> None:
        """Stop on purpose (scaled down, unloaded, shutting down): not a failure, no restart."""
        self.state = WorkerState.STOPPED
        await self.kill()

    async def kill(self) -> None:
        if self.state is not WorkerState.STOPPED:
            self.state = WorkerState.DEAD
        self._fail_pending(InternalError("The worker process died while handling the request"))
        if self._writer is not None:
            self._writer.close()
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()


@dataclass(slots=True)
class PoolConfig:
    min_workers: int
    max_workers: int
    response_timeout_s: float
    startup_timeout_s: float
    policy: ScalePolicy = field(default_factory=ScalePolicy)


@dataclass(eq=False, slots=True)
class _Slot:
    """A place for one worker: restarted while the slot lives, retired when scaling down."""

    worker: Worker | None = None
    retired: bool = False
    warm: Spawned | None = None  # a pre-started process for this slot's first worker
    restart_at: float | None = None  # when its dead worker's successor starts (monotonic)


class WorkerPool:
    """Keeps between ``min_workers`` and ``max_workers`` workers of one model alive.

    The pool starts ``min_workers``, restarts dead workers with capped backoff, hands out idle
    ones, and grows or shrinks within the bounds as its load (``pending`` requests, busy
    workers) stays high or low.
    """

    def __init__(
        self,
        load: LoadModel,
        config: PoolConfig,
        next_worker_index: Callable[[], int],
        warm: WarmProcesses | None = None,
    ) -> None:
        self._load = load
        self.config = config
        self._next_index = next_worker_index
        self._warm = warm
        self._capacity = asyncio.Event()  # set when a worker may take another batch
        self._listeners: list[Callable[[], None]] = []  # told the same (see ``on_freed``)
        self.workers: list[Worker] = []
        self._slots: list[_Slot] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.restarts = 0
        self.last_error: str | None = None
        self.permanent_error: str | None = None  # the last load failure no restart can fix
        self.pending: Callable[[], int] = lambda: 0  # set by the model handle (queued requests)
        self._scale_state = ScaleState(0)
        self._autoscaling = False
        self._first_attempt = asyncio.Event()  # set once a worker has loaded or failed to

    @property
    def live_workers(self) -> int:
        return sum(1 for w in self.workers if w.alive)

    @property
    def busy_workers(self) -> int:
        return sum(1 for w in self.workers if w.state is WorkerState.BUSY)

    @property
    def target(self) -> int:
        """How many workers the pool is keeping now."""
        return len(self._slots)

    @property
    def ready(self) -> bool:
        return self.live_workers > 0

    def start(self) -> None:
        """Start ``min_workers`` workers in the background; ``ready`` turns true as they load.

        The first worker starts alone and the others once it has loaded (or failed): on a
        small machine, workers importing torch side by side only slow each other down, so
        this answers the first request sooner and reaches full strength about as fast.
        """
        target = self.config.min_workers
        self._scale_state = ScaleState(target)
        self._start_autoscaler()
        if target == 0:  # TorchServe registers with 0 workers: the scale API adds them
            return
        self._resize(1)
        if self._warm is not None:
            self._slots[0].warm = self._warm.take()
        if target > 1:
            self._background(self._start_the_rest(target))

    async def _start_the_rest(self, target: int) -> None:
        await self._first_attempt.wait()
        if not self._closed and self.target < target <= self.config.max_workers:
            self._resize(max(target, self.config.min_workers))
            self._scale_state = ScaleState(self.target)

    def _start_autoscaler(self) -> None:
        if self.config.max_workers > self.config.min_workers and not self._autoscaling:
            self._autoscaling = True
            self._background(self._autoscale())

    def _background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _resize(self, count: int) -> None:
        while len(self._slots) < count:
            slot = _Slot()
            self._slots.append(slot)
            self._background(self._keep_alive(slot))
        while len(self._slots) > count:
            self._retire(self._victim())

    def _victim(self) -> _Slot:
        """The slot to retire: one not serving (starting, dead, restarting) first, then an idle
        worker, then a busy one, so that scaling down never takes a live worker while a slot
        that serves nothing is left."""
        order = {WorkerState.STARTING: 0, WorkerState.DEAD: 0, WorkerState.READY: 1}
        return min(
            reversed(self._slots),
            key=lambda slot: order.get(slot.worker.state, 2) if slot.worker else 0,
        )

    def _retire(self, slot: _Slot) -> None:
        slot.retired = True
        self._slots.remove(slot)
        worker = slot.worker
        if worker is not None and worker.in_flight == 0:
            self._background(worker.stop())
        # a busy worker is stopped by ``run`` once its batches are answered

    async def scale(self, min_workers: int, max_workers: int) -> None:
        """New bounds from the management API; the pool moves inside them at once."""
        self.config.min_workers = min_workers
        self.config.max_workers = max_workers
        target = min(max(self.target, min_workers), max_workers)
        self._resize(max(target, 0))
        self._scale_state = ScaleState(self.target)
        self._start_autoscaler()

    async def wait_for_workers(self, count: int, timeout_s: float) -> bool:
        """Wait until ``count`` workers are live (registration and scaling with synchronous).

        Gives up at once when a worker failed to load in a way no restart can fix."""
        deadline = time.monotonic() + timeout_s
        self.permanent_error = None
        while self.live_workers < count:
            if time.monotonic() >= deadline or self.permanent_error is not None:
                return False
            await asyncio.sleep(0.05)
        return True

    async def wait_started(self, count: int, timeout_s: float) -> bool:
        """Start-up: wait until ``count`` workers (at least one, at most the target) are live;
        False when a load failed or the time ran out first (the model then says not ready)."""
        wanted = max(1, min(count, self.config.min_workers, self.config.max_workers))
        deadline = time.monotonic() + timeout_s
        while self.live_workers < wanted:
            if self._closed or self.last_error is not None or time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def wait_live(
        self, timeout_s: float, give_up: Callable[[], bool] = lambda: False
    ) -> bool:
        """Wait up to ``timeout_s`` for a live worker while one is on its way (loading, or
        restarting within that time after a crash); False at once when none is coming, when
        the latest load failed (a model that cannot load does not hold requests), or as soon
        as ``give_up()`` (the server is draining)."""
        deadline = time.monotonic() + timeout_s
        while not self.ready:
            if time.monotonic() >= deadline or give_up() or not self._coming(deadline):
                return False
            await asyncio.sleep(0.02)
        return True

    def _coming(self, by: float) -> bool:
        if self._closed or self.last_error is not None:
            return False
        for slot in self._slots:
            worker = slot.worker
            if worker is None or worker.state is WorkerState.STARTING:
                return True
            if worker.state is WorkerState.DEAD and slot.restart_at is None:
                return True  # just died: its restart is being scheduled
            if slot.restart_at is not None and slot.restart_at <= by:
                return True
        return False

    async def _autoscale(self) -> None:
        policy = self.config.policy
        while not self._closed:
            await asyncio.sleep(policy.tick_s)
            load = Load(queued=self.pending(), busy=self.busy_workers, live=self.live_workers)
            state = decide(
                self._scale_state,
                load,
                time.monotonic(),
                self.config.min_workers,
                self.config.max_workers,
                policy,
            )
            if state.target != self.target:
                log.info(
                    "model %s: autoscaling from %d to %d workers",
                    self._load.model_name,
                    self.target,
                    state.target,
                )
                self._resize(state.target)
            self._scale_state = state

    async def _keep_alive(self, slot: _Slot) -> None:
        """One worker slot: start a worker, wait for it to die, restart it with backoff."""
        delays = backoff_delays()
        while not self._closed and not slot.retired:
            worker = Worker(
                replace(self._load, worker_index=self._next_index()), self.config.startup_timeout_s
            )
            worker.on_free = self._freed
            slot.worker, slot.restart_at = worker, None
            self.workers.append(worker)
            try:
                warm, slot.warm = slot.warm, None
                await worker.start(warm)
            except (WorkerLoadError, OSError) as exc:
                self._first_attempt.set()
                if not (slot.retired or self._closed):  # else stopped on purpose while loading
                    self.last_error = str(exc)
                    if getattr(exc, "permanent", False):
                        self.permanent_error = str(exc)
                    log.error("model %s: worker failed to start: %s", self._load.model_name, exc)
            else:
                self._first_attempt.set()
                self.last_error = None
                if slot.retired:
                    await worker.stop()
                else:
                    self._freed()
                code = await worker.wait()
                if not self._closed and not slot.retired:
                    log.warning(
                        "model %s: worker %s exited with %s",
                        self._load.model_name,
                        worker.pid,
                        code,
                    )
                if time.monotonic() - worker.started_at > 30:
                    delays = backoff_delays()  # it served a while: start the backoff over
            finally:
                if worker.state is not WorkerState.STOPPED:
                    worker.state = WorkerState.DEAD
                self.workers.remove(worker)
            if self._closed or slot.retired:
                return
            self.restarts += 1
            delay = next(delays)
            slot.restart_at = time.monotonic() + delay
            await asyncio.sleep(delay)

    def _with_room(self) -> list[Worker]:
        return [w for w in self._serving() if w.has_room]

    def _serving(self) -> list[Worker]:
        current = {id(slot.worker) for slot in self._slots}
        return [w for w in self.workers if w.alive and id(w) in current]

    def serving(self) -> int:
        """Live workers of the pool's current slots (retired ones finishing a batch excluded)."""
        return len(self._serving())

    def idle(self) -> int:
        """Live workers with nothing sent or reserved: a batch for one of them starts at once."""
        return sum(1 for w in self._with_room() if w.in_flight == 0)

    async def wait_for_room(self) -> None:
        """Wait until some live worker can take another batch (nothing is reserved)."""
        while not self._with_room():
            self._capacity.clear()
            await self._capacity.wait()

    def on_freed(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever a worker finishes a batch or comes up."""
        self._listeners.append(listener)

    def _freed(self) -> None:
        self._capacity.set()
        for listener in self._listeners:
            listener()

    async def acquire(self) -> Worker:
        """Reserve room on the least busy live worker, waiting until there is some."""
        while True:
            candidates = self._with_room()
            if candidates:
                worker = min(candidates, key=lambda w: w.in_flight)
                worker.reserved += 1
                return worker
            self._capacity.clear()
            await self._capacity.wait()

    async def run(self, worker: Worker, batch: Batch) -> BatchResult:
        """Run a batch on an acquired worker; stop the worker after it if it was retired."""
        try:
            return await worker.run(batch, self.config.response_timeout_s)
        finally:
            retired = not any(slot.worker is worker for slot in self._slots)
            if retired and worker.alive and worker.in_flight == 0 and not self._closed:
                await worker.stop()

    def describe(self) -> list[dict[str, Any]]:
        """TorchServe's per-worker description."""
        return [
            {
                "id": str(index),
                "startTime": worker.started_iso,
                "status": worker.state.value,
                "pid": worker.pid,
                "device": worker.device,
                "gpu": worker.device.startswith("cuda"),
                "memoryUsage": 0,
            }
            for index, worker in enumerate(self.workers)
        ]

    async def stop(self) -> None:
        self._closed = True
        for worker in list(self.workers):
            await worker.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
