"""The reconciler's end-to-end harness: a controller in a thread (or as ``marserve controller``),
the API through httpx, the seeds' YAMLs with storageUri rewritten, and deadline waits."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from marserve.controlplane.config import ControllerConfig
from marserve.controlplane.controller import run_controller
from marserve.controlplane.operator import operator
from marserve.controlplane.replicas import Backoff
from marserve.controlplane.routing import ServiceRoute
from tests.e2e.conftest import EXAMPLE

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "deploy" / "kubernetes" / "samples"
ISVCS = "/apis/serving.kserve.io/v1beta1/namespaces/default/inferenceservices"
PODS = "/api/v1/namespaces/default/pods"
V1 = (EXAMPLE / "requests" / "v1" / "mnist.json").read_bytes()
V2 = (EXAMPLE / "requests" / "v2" / "mnist_v2_tensor.json").read_bytes()
DEADLINE_S = 120.0
BAD_HANDLER = """
from ts.torch_handler.base_handler import BaseHandler


class BadHandler(BaseHandler):
    def initialize(self, context):
        raise RuntimeError("this model cannot load: weights are corrupt")
"""


class Recorder:
    """A RouteSink that keeps the last route set the reconciler published."""

    def __init__(self) -> None:
        self.services: list[ServiceRoute] = []

    def update(self, services: Sequence[ServiceRoute]) -> None:
        self.services = list(services)


class Controller:
    """``run_controller`` with the reconciler in a thread of its own; stop() and start() again."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env, self.sink = home, env, Recorder()
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None

    def start(self) -> None:
        (self.home / "kubeconfig").unlink(missing_ok=True)
        config = ControllerConfig(home=self.home, port=0, gateway_port=0)
        op = operator(self.sink, backoff=Backoff(base=0.5), tick_s=0.3, gpus=0, env=self.env,
                      liveness_s=6.0)  # fmt: skip

        async def main() -> None:
            self.loop, self.stop_event = asyncio.get_running_loop(), asyncio.Event()
            await run_controller(config, [op], stop=self.stop_event)

        self.thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self.thread.start()
        kubeconfig = wait_for(lambda: _read(self.home / "kubeconfig"), "kubeconfig")
        doc = yaml.safe_load(kubeconfig)
        self.api = api_client(self.home, doc)
        wait_for(lambda: _ok(self.api, "/version"), "the API")

    def stop(self) -> None:
        assert self.loop is not None and self.stop_event is not None and self.thread is not None
        self.api.close()  # a client hangs up before its server goes, as a user's kubectl does
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)

    # helpers ------------------------------------------------------------------------------
    def apply(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        current = self.api.get(f"{ISVCS}/{name}")
        if current.status_code == 404:
            response = self.api.post(ISVCS, json=obj)
        else:
            obj["metadata"]["resourceVersion"] = current.json()["metadata"]["resourceVersion"]
            response = self.api.put(f"{ISVCS}/{name}", json=obj)
        assert response.status_code in (200, 201), response.text

    def isvc(self, name: str) -> dict[str, Any]:
        response = self.api.get(f"{ISVCS}/{name}")
        assert response.status_code == 200, response.text
        out: dict[str, Any] = response.json()
        return out

    def pods(self, name: str) -> list[dict[str, Any]]:
        selector = f"serving.kserve.io/inferenceservice={name}"
        items: list[dict[str, Any]] = self.api.get(PODS, params={"labelSelector": selector}).json()[
            "items"
        ]
        return items

    def wait_ready(self, name: str, status: str = "True") -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            obj = self.isvc(name)
            return obj if condition(obj, "Ready").get("status") == status else None

        return wait_for(check, f"{name} Ready={status}")


def api_client(home: Path, kubeconfig: dict[str, Any]) -> httpx.Client:
    """httpx on the kubeconfig's HTTPS server, trusting the controller's own certificate."""
    return httpx.Client(
        base_url=kubeconfig["clusters"][0]["cluster"]["server"],
        headers={"Authorization": f"Bearer {kubeconfig['users'][0]['user']['token']}"},
        verify=ssl.create_default_context(cafile=str(home / "apiserver.crt")),
    )


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() and path.stat().st_size else None


def _ok(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(check: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"waited {deadline_s}s for {what}")


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == kind:
            found: dict[str, Any] = cond
            return found
    return {}


def sample(name: str, uri: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((SAMPLES / name).read_text())
    pred = obj["spec"]["predictor"]
    (pred.get("model") or pred["pytorch"])["storageUri"] = uri
    return obj


def port_of(pod: dict[str, Any], name: str = "http1") -> int:
    ports = pod["spec"]["containers"][0]["ports"]
    return int(next(p["containerPort"] for p in ports if p["name"] == name))


def ready_pod(ctl: Controller, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        pods = [p for p in ctl.pods(name) if p["status"].get("phase") == "Running"]
        ready = [p for p in pods if p["status"]["containerStatuses"][0]["ready"]]
        return ready[0] if ready else None

    pod: dict[str, Any] = wait_for(check, f"a ready pod of {name}")
    return pod


def reasons(ctl: Controller, pod: str) -> set[str]:
    """The reasons of the Events about ``pod`` (what ``kubectl describe pod`` lists)."""
    events = ctl.api.get("/api/v1/namespaces/default/events").json()["items"]
    return {e["reason"] for e in events if e["involvedObject"]["name"] == pod}


def predict_v1(port: int) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/v1/models/mnist:predict", content=V1, timeout=30)


def make_stores(root: Path, mnist_store: Path) -> dict[str, Path]:
    """The seeds' layout (config/ + model-store/): a good one, and one whose handler raises."""
    good = root / "good"
    shutil.copytree(mnist_store, good)
    bad = root / "bad"
    (bad / "model-store").mkdir(parents=True)
    shutil.copytree(mnist_store / "config", bad / "config")
    (root / "bad_handler.py").write_text(BAD_HANDLER)
    (root / "empty.bin").write_bytes(b"")
    archiver = [sys.executable, "-m", "model_archiver.model_packaging"]  # torch-model-archiver
    subprocess.run([*archiver, "--model-name", "mnist", "--version", "1.0",
                    "--serialized-file", str(root / "empty.bin"), "--handler",
                    str(root / "bad_handler.py"), "--export-path", str(bad / "model-store")],
                   check=True, capture_output=True)  # fmt: skip
    return {"good": good, "bad": bad}


def start_cli_controller(home: Path, log: Path) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    """``marserve controller`` as a user runs it, its API found through the kubeconfig it writes."""
    (home / "kubeconfig").unlink(missing_ok=True)
    command = [sys.executable, "-m", "marserve", "controller", "--port", "0",
               "--gateway-port", "0", "--home", str(home)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MARSERVE_CRASH_BACKOFF_S": "0.5"}
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    doc = yaml.safe_load(wait_for(lambda: _read(home / "kubeconfig"), "kubeconfig"))
    api = api_client(home, doc)
    wait_for(lambda: _ok(api, "/version"), "the API")
    return process, api


def upload_to_gcs(host: str, store: Path, prefixes: Sequence[str]) -> None:
    """Put ``store``'s files under each ``gs://kfserving-examples/PREFIX/`` of a GCS emulator."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": host})  # fmt: skip
    bucket = client.create_bucket("kfserving-examples")
    for path in sorted(store.rglob("*")):
        if path.is_file():
            for prefix in prefixes:
                key = path.relative_to(store).as_posix()
                bucket.blob(f"{prefix}/{key}").upload_from_filename(path)
    client.close()


S3_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def upload_to_s3(endpoint: str, store: Path, bucket: str, prefix: str) -> None:
    """Put ``store``'s files under ``s3://BUCKET/PREFIX/`` of a moto server."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **S3_KEYS)
    client.create_bucket(Bucket=bucket)
    for path in sorted(store.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(store).as_posix()}")
    client.close()


def storage_env(gcs_host: str, s3_endpoint: str) -> dict[str, str]:
    """What a controller needs to pull from the local GCS emulator and moto S3."""
    return {"STORAGE_EMULATOR_HOST": gcs_host, "AWS_ENDPOINT_URL": s3_endpoint,
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # fmt: skip
