"""Scale from zero and a canary shift through ``marserve controller``'s gateway, in one run.

``.venv/bin/python bench/cold_start.py [--runs 3]``: starts the controller (Knative's windows
shortened so a revision reaches zero in seconds), serves the seeds' autoscaling sample from the
MNIST example's store, and measures, each run, the time from a request at zero replicas to its
200 (the activator holds it while a replica starts). Then it measures req/s at c=8 on a steady
one-revision service, and again while a canary (20 %) rolls out on it. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "deploy" / "kubernetes" / "samples"
EXAMPLE = ROOT / "examples" / "mnist"
ISVCS = "/apis/serving.kserve.io/v1beta1/namespaces/default/inferenceservices"
PODS = "/api/v1/namespaces/default/pods"
SHORT = ["stable-window=6s", "panic-window-percentage=50", "tick=1s",
         "scale-to-zero-grace-period=2s"]  # fmt: skip


def wait_for(check: Callable[[], Any], what: str, deadline_s: float = 120.0) -> Any:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with_value = check()
        if with_value:
            return with_value
        time.sleep(0.05)
    raise TimeoutError(f"waited {deadline_s}s for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bench:
    def __init__(self, home: Path) -> None:
        self.home, self.port = home, free_port()
        command = [sys.executable, "-m", "marserve", "controller", "--port", "0", "--home",
                   str(home), "--gateway-port", str(self.port),
                   *(f"--autoscaler={kv}" for kv in SHORT)]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        log = (home / "controller.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        kubeconfig = home / "kubeconfig"
        wait_for(lambda: kubeconfig.exists() and kubeconfig.stat().st_size, "kubeconfig")
        doc = yaml.safe_load(kubeconfig.read_text())
        self.api = httpx.Client(
            base_url=doc["clusters"][0]["cluster"]["server"],
            headers={"Authorization": f"Bearer {doc['users'][0]['user']['token']}"},
            verify=ssl.create_default_context(cafile=str(home / "apiserver.crt")),
        )
        wait_for(lambda: self._ok("/version"), "the API")
        self.url = f"http://127.0.0.1:{self.port}"

    def _ok(self, path: str) -> bool:
        try:
            return self.api.get(path).status_code == 200
        except httpx.HTTPError:
            return False

    def apply(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        current = self.api.get(f"{ISVCS}/{name}")
        if current.status_code == 404:
            response = self.api.post(ISVCS, json=obj)
        else:
            obj["metadata"]["resourceVersion"] = current.json()["metadata"]["resourceVersion"]
            response = self.api.put(f"{ISVCS}/{name}", json=obj)
        response.raise_for_status()

    def ready(self, name: str) -> bool:
        conds = self.api.get(f"{ISVCS}/{name}").json().get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    def pods(self, name: str) -> list[Any]:
        selector = {"labelSelector": f"serving.kserve.io/inferenceservice={name}"}
        items: list[Any] = self.api.get(PODS, params=selector).json()["items"]
        return items

    def close(self) -> None:
        for item in self.api.get(ISVCS).json().get("items", []):
            self.api.delete(f"{ISVCS}/{item['metadata']['name']}")
        try:
            wait_for(lambda: not self.api.get(PODS).json()["items"], "pods deleted", 60)
        finally:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)
            self.api.close()


def sample(name: str, uri: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((SAMPLES / name).read_text())
    obj["spec"]["predictor"]["model"]["storageUri"] = uri
    return obj


def cold_starts(bench: Bench, store: Path, runs: int, body: bytes) -> list[float]:
    name = "torchserve-autoscaling"
    bench.apply(sample(f"{name}.yaml", store.as_uri()))
    wait_for(lambda: bench.ready(name), "ready")
    host = {"Host": f"{name}.default.example.com"}
    times = []
    for _ in range(runs):
        wait_for(lambda: not bench.pods(name), "zero replicas", 120)
        started = time.monotonic()
        response = httpx.post(f"{bench.url}/v1/models/mnist:predict", content=body,
                              headers=host, timeout=120)  # fmt: skip
        times.append(time.monotonic() - started)
        response.raise_for_status()
    return times


async def rate(url: str, host: str, body: bytes, seconds: float, c: int = 8) -> tuple[float, int]:
    """req/s answered 200 and the count of anything else, at ``c`` concurrent clients."""
    ok = bad = 0
    stop_at = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, headers={"Host": host}, timeout=60) as client:

        async def worker() -> None:
            nonlocal ok, bad
            while time.monotonic() < stop_at:
                r = await client.post("/v1/models/mnist:predict", content=body)
                ok, bad = (ok + 1, bad) if r.status_code == 200 else (ok, bad + 1)

        await asyncio.gather(*(worker() for _ in range(c)))
    return ok / seconds, bad


def canary_shift(bench: Bench, store: Path, body: bytes, seconds: float) -> dict[str, Any]:
    bench.apply(sample("torchserve.yaml", store.as_uri()))
    wait_for(lambda: bench.ready("torchserve"), "ready")
    host = "torchserve.default.example.com"
    steady, steady_bad = asyncio.run(rate(bench.url, host, body, seconds))
    second = store.parent / "store-v2"
    shutil.copytree(store, second, dirs_exist_ok=True)
    bench.apply(sample("torchserve-canary.yaml", second.as_uri()))
    shift, shift_bad = asyncio.run(rate(bench.url, host, body, seconds))
    return {"steady_rps": round(steady, 1), "steady_errors": steady_bad,
            "during_canary_rps": round(shift, 1), "during_canary_errors": shift_bad}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="marserve-cold-") as tmp:
        root = Path(tmp)
        store = root / "store"
        subprocess.run([sys.executable, str(EXAMPLE / "build_store.py"), "--out", str(store)],
                       check=True, capture_output=True)  # fmt: skip
        body = (EXAMPLE / "requests" / "v1" / "mnist.json").read_bytes()
        (root / "home").mkdir()
        bench = Bench(root / "home")
        try:
            times = cold_starts(bench, store, args.runs, body)
            shift = canary_shift(bench, store, body, args.seconds)
        finally:
            bench.close()
    result = {"cold_start_s": [round(t, 3) for t in times],
              "cold_start_median_s": round(statistics.median(times), 3), **shift}  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
