"""A ``marserve controller`` process (gateway, reconciler, autoscaler) for the autoscaling and
canary tests: its API, its gateway URL, the autoscaler's gauges, and a ``hey``-like load loop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from prometheus_client.parser import text_string_to_metric_families

from marserve.controlplane.controller import free_port
from tests.e2e.isvc_harness import ISVCS, PODS, V1, Controller, _ok, _read, api_client
from tests.e2e.isvc_harness import wait_for as _wait_for

# Knative's windows shortened for a test: 6 s stable (3 s panic), 1 s ticks, 2 s grace.
SHORT = {"stable-window": "6s", "panic-window-percentage": "50", "tick": "1s",
         "scale-to-zero-grace-period": "2s"}  # fmt: skip


def wait_for(check: Any, what: str, deadline_s: float = 90.0) -> Any:
    return _wait_for(check, what, deadline_s)


class Autoscaled(Controller):
    """``marserve controller`` as a user runs it (gateway, reconciler and autoscaler in one
    process), with Knative's windows shortened through ``--autoscaler``."""

    def start(self) -> None:
        (self.home / "kubeconfig").unlink(missing_ok=True)
        port = free_port("127.0.0.1")
        flags = [f"--autoscaler={k}={v}" for k, v in SHORT.items()]
        command = [sys.executable, "-m", "marserve", "controller", "--port", "0",
                   "--gateway-port", str(port), "--home", str(self.home), "--hold-s", "60",
                   *flags]  # fmt: skip
        env = {**self.env, "MARSERVE_CRASH_BACKOFF_S": "0.5"}
        with (self.home / "controller.log").open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        doc = yaml.safe_load(wait_for(lambda: _read(self.home / "kubeconfig"), "kubeconfig"))
        self.api = api_client(self.home, doc)
        wait_for(lambda: _ok(self.api, "/version"), "the API")
        self.url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=self.url) as gateway:
            wait_for(lambda: _ok(gateway, "/healthz"), "the gateway")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.api.close()

    def log(self) -> str:
        return (self.home / "controller.log").read_text(errors="replace")[-4000:]

    def gauges(self, revision: str) -> dict[str, float]:
        """The autoscaler's series for ``revision``, read from the gateway's /metrics."""
        out: dict[str, float] = {}
        for s in self.samples("marserve_autoscaler_", revision):
            out[s.name.removeprefix("marserve_autoscaler_")] = s.value
        return out

    def samples(self, prefix: str, revision: str) -> list[Any]:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return [s for family in text_string_to_metric_families(text) for s in family.samples
                if s.name.startswith(prefix) and s.labels.get("revision") == revision]  # fmt: skip

    def answered(self, revision: str) -> int:
        """Requests the gateway answered for ``revision`` (any status)."""
        found = self.samples("marserve_gateway_requests_total", revision)
        return int(sum(s.value for s in found))

    def running(self, name: str) -> int:
        return sum(1 for p in self.pods(name) if p["status"].get("phase") == "Running")


def running_controller(home: Path) -> Iterator[Autoscaled]:
    """Start one; on the way out delete every service, wait for the pods to go, stop it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MARSERVE_STORAGE_CACHE": str(home / "cache")}
    controller = Autoscaled(home, env)
    controller.start()
    try:
        yield controller
    finally:
        for item in controller.api.get(ISVCS).json().get("items", []):
            controller.api.delete(f"{ISVCS}/{item['metadata']['name']}")
        try:
            wait_for(lambda: not controller.api.get(PODS).json()["items"], "pods deleted", 60)
        finally:
            controller.stop()
            for record in home.rglob("replica.json"):  # never leave a process behind
                pid = json.loads(record.read_text()).get("pid")
                if pid and psutil.pid_exists(pid):
                    os.killpg(pid, 9)


HEAVY = json.dumps({"instances": json.loads(V1)["instances"] * 4}).encode()
"""4 digits a request (20 in flight per replica x 4 stays under the replica's job queue of 100):
the replica, not this Python client, is then the bottleneck, so the
requests a closed loop of N clients keeps in the gateway are close to N, as with ``hey``."""


async def load_async(url: str, host: str, concurrency: int, seconds: float) -> list[int]:
    """A ``hey -c N -z Ts``-like closed loop through the gateway; the status codes it got."""
    codes: list[int] = []
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"Host": host}, limits=limits) as client:

        async def worker() -> None:
            while time.monotonic() < stop_at:
                response = await client.post("/v1/models/mnist:predict", content=HEAVY,
                                             timeout=60)  # fmt: skip
                codes.append(response.status_code)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return codes


def load(ctl: Autoscaled, host: str, concurrency: int, seconds: float) -> list[int]:
    return asyncio.run(load_async(ctl.url, host, concurrency, seconds))
