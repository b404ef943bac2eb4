"""Replica processes: the one place that starts, probes, restarts (CrashLoopBackOff), stops them."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

from marserve.controlplane.events import Note
from marserve.controlplane.reconciler import Failure, ReplicaView
from marserve.controlplane.routing import Endpoint
from marserve.controlplane.runtime import ReplicaSpec

log = logging.getLogger("marserve.controlplane.replicas")

PROBE_TIMEOUT_S = 2.0
MESSAGE_LINES = 5
LIVENESS_S = 60.0
"""How long a started replica (models attempted, ports written) may fail ``/ping`` before it is
killed as a failed liveness probe: a handler that raises in ``initialize`` never gets healthy."""


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Kubernetes' CrashLoopBackOff: ``base`` doubling to ``cap``, reset after ``reset_after``
    seconds of running."""

    base: float = 10.0
    cap: float = 300.0
    reset_after: float = 600.0

    def delay(self, crashes: int) -> float:
        return float(min(self.cap, self.base * 2**crashes))


@dataclass(frozen=True, slots=True)
class Placement:
    """CPUs (affinity) and CUDA devices a replica gets; ``None`` leaves the machine's default."""

    cpus: tuple[int, ...] | None = None
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class PodState:
    """What the Pod object shows of a replica."""

    view: ReplicaView
    pid: int | None
    running_since: str | None
    last_started: str | None
    endpoint: Endpoint | None
    placement: Placement


def _log_tail(path: Path, start: int = 0, lines: int = MESSAGE_LINES) -> str:
    """The termination message: the last ERROR line this run logged, else its last lines."""
    try:
        with path.open("rb") as f:
            f.seek(max(start, path.stat().st_size - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    tail = text.strip().splitlines()
    errors = [line for line in tail if " ERROR " in line]
    return errors[-1].strip() if errors else "\n".join(tail[-lines:])


def exit_code_of(returncode: int) -> int:
    """A Popen return code as a container's exit code (signal N -> 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def _reap(pid: int) -> int | None:
    """The exit code of a child of this process that has exited (an adopted replica can still
    be one when the controller ran in-process); None while it runs or when it is not ours."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done else None


_RELEASED: list[subprocess.Popen[bytes]] = []
"""Processes handed over to a later controller: kept referenced, never reaped or warned about."""


def endpoint_of(urls: dict[str, str]) -> Endpoint | None:
    inference = urls.get("inference")
    if not inference:
        return None
    port = int(inference.rstrip("/").rsplit(":", 1)[1])
    grpc = urls.get("grpc_inference")
    grpc_port = int(grpc.rstrip("/").rsplit(":", 1)[1]) if grpc else None
    return Endpoint("127.0.0.1", port, grpc_port)


class Replica:
    """One ``marserve serve`` process of a revision, kept running as a kubelet keeps a container."""

    def __init__(
        self,
        name: str,
        state_dir: Path,
        log_path: Path,
        spec: ReplicaSpec,
        *,
        backoff: Backoff | None = None,
        placement: Placement | None = None,
        clock: Callable[[], float] = time.monotonic,
        liveness_s: float = LIVENESS_S,
    ) -> None:
        self.name, self.state_dir, self.log_path, self.spec = name, state_dir, log_path, spec
        self.backoff = backoff or Backoff()
        self.placement = placement or Placement()
        self.clock = clock
        self.popen: subprocess.Popen[bytes] | None = None
        self.proc: psutil.Process | None = None
        self.started = 0.0
        self.running_since: str | None = None
        self.ready = False
        self.restarts = 0
        self.crashes = 0
        self.waiting: str | None = "ContainerCreating"
        self.until = 0.0
        self.last: Failure | None = None
        self.endpoint: Endpoint | None = None
        self.oom = False
        self.stopped = False
        self.liveness_s = liveness_s
        self.unhealthy_since: float | None = None
        self.log_start = 0
        self.notes: list[Note] = []
        """Events to report (drained by the operator)."""

    # files --------------------------------------------------------------------------------
    @property
    def ports_file(self) -> Path:
        return self.state_dir / "ports.json"

    @property
    def record_file(self) -> Path:
        return self.state_dir / "replica.json"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "config.properties"

    def _record(self) -> None:
        data = {"pid": self.pid, "running_since": self.running_since, "restarts": self.restarts}
        tmp = self.record_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.record_file)

    @property
    def pid(self) -> int | None:
        if self.popen is not None:
            return self.popen.pid
        return self.proc.pid if self.proc is not None else None

    # lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Spawn the process in its own process group, its output appended to the Pod log."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.spec.config_text)
        self.ports_file.unlink(missing_ok=True)
        self.log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = [*self.spec.argv, "--ts-config", str(self.config_file)]
        argv += ["--port-file", str(self.ports_file), "--pid-file", str(self.state_dir / "pid")]
        argv += ["--key-file", str(self.state_dir / "key_file.json")]
        env = {**os.environ, **self.spec.env}
        if self.placement.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in self.placement.gpus)
        cpus = self.placement.cpus
        with self.log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.state_dir,
                start_new_session=True,
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
            )
        self.proc = None
        self.started = self.clock()
        self.running_since = now_iso()
        self.waiting = None
        self.ready = False
        self.oom = False
        self.endpoint = None
        self.unhealthy_since = None
        self._record()
        self.notes.append(Note("Started", "Started container kserve-container"))
        log.info("replica %s started (pid %s)", self.name, self.popen.pid)

    def adopt(self) -> bool:
        """Take over a replica a previous controller started, if its process still runs; one
        that died meanwhile counts as a restart, as a kubelet finding its container gone."""
        try:
            data = json.loads(self.record_file.read_text())
            self.restarts = int(data.get("restarts") or 0)
            pid = int(data["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        try:
            proc = psutil.Process(pid)
            alive = proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
            alive = alive and any(str(self.state_dir) in part for part in proc.cmdline())
        except psutil.Error:
            alive = False
        if not alive:
            message = "The container could not be located when the controller restarted"
            self.last = Failure("ContainerStatusUnknown", 137, message, now_iso())
            self.restarts += 1
            return False
        self.proc = proc
        self.started = self.clock()
        self.running_since = data.get("running_since") or now_iso()
        self.waiting = None
        self._read_ports()
        return True

    def _exit_status(self) -> int | None:
        if self.popen is not None:
            return self.popen.poll()
        if self.proc is not None:
            code = _reap(self.proc.pid)
            if code is not None:
                return code
            try:
                gone = not self.proc.is_running() or self.proc.status() == psutil.STATUS_ZOMBIE
            except psutil.Error:
                gone = True
            return 255 if gone else None  # not our child: its exit code is not ours to read
        return None

    async def step(self, client: httpx.AsyncClient) -> None:
        """One kubelet pass: notice an exit, restart after the backoff, watch memory, probe."""
        if self.stopped:
            return
        now = self.clock()
        if self.popen is None and self.proc is None:
            if self.waiting == "ContainerCreating" or now >= self.until:
                self.start()
            return
        code = self._exit_status()
        if code is not None:
            self._terminated(code, now)
            return
        self._watch_memory()
        await self._probe(client)

    def _terminated(self, code: int, now: float) -> None:
        exit_code = 137 if self.oom else exit_code_of(code)
        reason = "OOMKilled" if self.oom else ("Completed" if exit_code == 0 else "Error")
        self.last = Failure(reason, exit_code, _log_tail(self.log_path, self.log_start), now_iso())
        if now - self.started >= self.backoff.reset_after:
            self.crashes = 0
        self.until = now + self.backoff.delay(self.crashes)
        self.crashes += 1
        self.restarts += 1  # as the kubelet counts them: each dead instance of the container
        self.popen, self.proc = None, None
        self.ready, self.endpoint, self.running_since = False, None, None
        self.waiting = "CrashLoopBackOff"
        message = f"Back-off restarting failed container kserve-container in pod {self.name}"
        self.notes.append(Note("BackOff", message, "Warning"))
        log.warning("replica %s exited: %s (exit code %s)", self.name, reason, exit_code)

    def _tree(self) -> list[psutil.Process]:
        pid = self.pid
        if pid is None:
            return []
        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def _watch_memory(self) -> None:
        limit = self.spec.resources.memory
        if limit is None:
            return
        rss = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                rss += proc.memory_info().rss
        if rss > limit:
            log.warning("replica %s uses %d bytes, over limits.memory %d", self.name, rss, limit)
            self.oom = True
            message = f"Memory cgroup out of memory: {rss} bytes used, limit {limit}"
            self.notes.append(Note("OOMKilling", message, "Warning"))
            self._signal(signal.SIGKILL)

    def _read_ports(self) -> None:
        try:
            self.endpoint = endpoint_of(json.loads(self.ports_file.read_text()))
        except (OSError, ValueError, IndexError):
            self.endpoint = None

    async def _probe(self, client: httpx.AsyncClient) -> None:
        """Ready once the server wrote its ports (models loaded) and ``/ping`` says Healthy."""
        if self.endpoint is None:
            self._read_ports()
        if self.endpoint is None:
            self.ready = False
            return
        url = f"http://{self.endpoint.host}:{self.endpoint.port}/ping"
        try:
            response = await client.get(url, timeout=PROBE_TIMEOUT_S)
            self.ready = response.status_code == 200
        except httpx.HTTPError:
            self.ready = False
        now = self.clock()
        if self.ready:
            self.unhealthy_since = None
        elif self.unhealthy_since is None:
            self.unhealthy_since = now
        elif now - self.unhealthy_since >= self.liveness_s:
            log.warning(
                "replica %s: liveness failed for %.0fs, killing", self.name, self.liveness_s
            )
            message = f"Liveness probe failed: /ping not Healthy for {self.liveness_s:.0f}s"
            self.notes.append(Note("Unhealthy", message, "Warning"))
            self.notes.append(Note("Killing", "Container kserve-container failed liveness probe, "
                                   "will be restarted"))  # fmt: skip
            self.unhealthy_since = None
            self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    async def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace_s``; the replica stays stopped."""
        import asyncio

        self.stopped = True
        self.ready = False
        if self.pid is None:
            return
        self._signal(signal.SIGTERM)
        deadline = self.clock() + grace_s
        while self._exit_status() is None and self.clock() < deadline:
            await asyncio.sleep(0.05)
        self._signal(signal.SIGKILL)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)
        self.popen, self.proc = None, None

    def release(self) -> None:
        """The controller stops but the replica keeps serving; the next controller adopts it."""
        if self.popen is not None and self.popen.poll() is None:
            _RELEASED.append(self.popen)
        self.popen = None

    def view(self) -> ReplicaView:
        return ReplicaView(self.name, self.ready, self.restarts, self.waiting, self.last)

    def pod_state(self) -> PodState:
        return PodState(
            self.view(),
            self.pid,
            self.running_since,
            self.running_since,
            self.endpoint,
            self.placement,
        )


def free_cpus() -> Sequence[int]:
    return sorted(os.sched_getaffinity(0))
