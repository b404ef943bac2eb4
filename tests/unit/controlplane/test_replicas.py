"""Replica supervision with real processes: CrashLoopBackOff timing, OOMKilled, placement, stop."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from marserve.controlplane.replicas import Backoff, Placement, Replica, exit_code_of
from marserve.controlplane.runtime import ReplicaSpec, Resources

DEADLINE_S = 30.0


def spec(code: str, **resources: object) -> ReplicaSpec:
    """A replica whose process is ``python -c CODE`` (the server's extra flags are ignored)."""
    return ReplicaSpec((sys.executable, "-c", code), {"MARK": "on"}, "", Resources(**resources))  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def step_until(replica: Replica, check: object, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            await replica.step(client)
            if check():  # type: ignore[operator]
                return
            await asyncio.sleep(0.02)
    raise TimeoutError("the replica never got there")


def make(tmp_path: Path, code: str, clock: Clock | None = None, **kw: object) -> Replica:
    resources = kw.pop("resources", {})
    return Replica("pod-a", tmp_path / "state", tmp_path / "pods" / "c.log",
                   spec(code, **resources),  # type: ignore[arg-type]
                   clock=clock or time.monotonic, **kw)  # type: ignore[arg-type]  # fmt: skip


def test_backoff_doubles_to_five_minutes() -> None:
    b = Backoff()
    assert [b.delay(n) for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]


def test_exit_codes_as_a_container_reports_them() -> None:
    assert exit_code_of(3) == 3
    assert exit_code_of(-9) == 137
    assert exit_code_of(-15) == 143


def test_crash_loop_backoff_waits_then_restarts(tmp_path: Path) -> None:
    clock = Clock()
    replica = make(tmp_path, "import sys; print('dying now', flush=True); sys.exit(3)", clock,
                   backoff=Backoff(base=10.0))  # fmt: skip

    async def scenario() -> None:
        await step_until(replica, lambda: replica.waiting == "CrashLoopBackOff")
        assert replica.restarts == 1
        assert replica.last is not None
        assert (replica.last.reason, replica.last.exit_code) == ("Error", 3)
        assert "dying now" in replica.last.message
        clock.now += 9.0  # still inside the 10 s back-off: nothing starts
        async with httpx.AsyncClient() as client:
            await replica.step(client)
        assert replica.pid is None
        clock.now += 1.5
        await step_until(replica, lambda: replica.waiting == "CrashLoopBackOff" and
                         replica.restarts == 2)  # fmt: skip
        assert replica.until == pytest.approx(clock.now + 20.0)  # doubled
        clock.now += 601.0  # a run longer than 10 min resets the back-off
        replica.started = clock.now - 601.0
        replica._terminated(1, clock.now)
        assert replica.until == pytest.approx(clock.now + 10.0)

    asyncio.run(scenario())


def test_over_the_memory_limit_is_oom_killed(tmp_path: Path) -> None:
    hog = (
        "import time; x = bytearray(300 * 2**20); x[::4096] = b'1' * len(x[::4096]); time.sleep(60)"
    )
    replica = make(tmp_path, hog, resources={"memory": 100 * 2**20})
    asyncio.run(step_until(replica, lambda: replica.waiting == "CrashLoopBackOff"))
    assert replica.last is not None
    assert (replica.last.reason, replica.last.exit_code) == ("OOMKilled", 137)


def test_placement_sets_affinity_cuda_devices_and_env(tmp_path: Path) -> None:
    out = tmp_path / "seen.json"
    code = ("import json, os, time; json.dump({'cpus': sorted(os.sched_getaffinity(0)), "
            "'cuda': os.environ.get('CUDA_VISIBLE_DEVICES'), 'mark': os.environ.get('MARK')}, "
            f"open({str(out)!r}, 'w')); time.sleep(60)")  # fmt: skip
    first = sorted(os.sched_getaffinity(0))[0]
    replica = make(tmp_path, code, placement=Placement((first,), (0, 1)))

    async def scenario() -> None:
        await step_until(replica, lambda: out.exists() and out.stat().st_size > 0)
        await replica.stop(grace_s=5)

    asyncio.run(scenario())
    assert json.loads(out.read_text()) == {"cpus": [first], "cuda": "0,1", "mark": "on"}


def test_stop_kills_the_whole_group_even_when_sigterm_is_ignored(tmp_path: Path) -> None:
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "time.sleep(60)")  # fmt: skip
    replica = make(tmp_path, code)

    async def scenario() -> list[int]:
        await step_until(replica, lambda: replica.pid is not None and
                         len(psutil.Process(replica.pid).children()) == 1)  # fmt: skip
        assert replica.pid is not None
        pids = [replica.pid, *(c.pid for c in psutil.Process(replica.pid).children())]
        started = time.monotonic()
        await replica.stop(grace_s=0.5)
        assert time.monotonic() - started < 10
        return pids

    pids = asyncio.run(scenario())
    deadline = time.monotonic() + DEADLINE_S
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids):
        assert time.monotonic() < deadline, "a process of the group survived"
        time.sleep(0.05)


def test_a_new_supervisor_adopts_a_running_replica(tmp_path: Path) -> None:
    code = "import time; time.sleep(60)"
    first = make(tmp_path, code)

    async def scenario() -> None:
        await step_until(first, lambda: first.pid is not None)
        first.release()
        second = make(tmp_path, code)
        assert second.adopt()
        assert second.pid is not None
        await second.stop(grace_s=2)

    asyncio.run(scenario())
    gone = make(tmp_path, code)
    assert not gone.adopt()  # nothing to adopt: counted as a restart, started afresh
    assert gone.restarts == 1
    assert gone.last is not None and gone.last.reason == "ContainerStatusUnknown"
