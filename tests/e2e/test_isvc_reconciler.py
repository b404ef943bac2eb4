"""InferenceServices run by the reconciler: the seeds' YAMLs applied through the API, replicas as
real ``marserve serve`` processes reached on their own loopback ports, faults, restart, delete."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as tc
import yaml

from marserve.controlplane.config import ControllerConfig
from marserve.controlplane.controller import run_controller
from marserve.controlplane.operator import operator
from marserve.controlplane.replicas import Backoff
from marserve.controlplane.routing import ServiceRoute
from tests.e2e.conftest import EXAMPLE
from tests.e2e.storage_servers import gcs_emulator, moto_s3

pytestmark = pytest.mark.slow
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
        server = doc["clusters"][0]["cluster"]["server"]
        token = doc["users"][0]["user"]["token"]
        self.api = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {token}"})
        wait_for(lambda: _ok(self.api, "/version"), "the API")

    def stop(self) -> None:
        assert self.loop is not None and self.stop_event is not None and self.thread is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)
        self.api.close()

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


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, mnist_store: Path) -> dict[str, Path]:
    """The seeds' layout (config/ + model-store/): a good one, and one whose handler raises."""
    root = tmp_path_factory.mktemp("isvc-stores")
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


@pytest.fixture(scope="module")
def gcs(stores: dict[str, Path]) -> Iterator[str]:
    """A GCS emulator holding the good store under the seeds' gs:// path."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with gcs_emulator() as host:
        client = storage.Client(project="test", credentials=AnonymousCredentials(),
                                client_options={"api_endpoint": host})  # fmt: skip
        bucket = client.create_bucket("kfserving-examples")
        for path in sorted(stores["good"].rglob("*")):
            if path.is_file():
                key = path.relative_to(stores["good"]).as_posix()
                blob = bucket.blob(f"models/torchserve/image_classifier/v2/{key}")
                blob.upload_from_filename(path)
        client.close()
        yield host


@pytest.fixture(scope="module")
def s3(stores: dict[str, Path]) -> Iterator[str]:
    """A moto S3 server holding the good store under s3://models/torchserve/mnist."""
    import boto3

    with moto_s3() as endpoint:
        keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys)
        client.create_bucket(Bucket="models")
        for path in sorted(stores["good"].rglob("*")):
            if path.is_file():
                key = path.relative_to(stores["good"]).as_posix()
                client.upload_file(str(path), "models", f"torchserve/mnist/{key}")
        client.close()
        yield endpoint


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory, gcs: str, s3: str) -> Iterator[Controller]:
    home = tmp_path_factory.mktemp("controller-home")
    env = {**os.environ, "STORAGE_EMULATOR_HOST": gcs, "OMP_NUM_THREADS": "1",
           "MARSERVE_STORAGE_CACHE": str(home / "cache"), "AWS_ENDPOINT_URL": s3,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # fmt: skip
    controller = Controller(home, env)
    controller.start()
    try:
        yield controller
    finally:
        for item in controller.api.get(ISVCS).json().get("items", []):
            controller.api.delete(f"{ISVCS}/{item['metadata']['name']}")
        left = lambda: [p["metadata"]["name"] for p in controller.api.get(PODS).json()["items"]]  # noqa: E731
        try:
            try:
                wait_for(lambda: not left(), "every pod deleted", 60)
            except TimeoutError:
                raise AssertionError(f"pods left after delete: {left()}") from None
        finally:
            controller.stop()
            for record in home.rglob("replica.json"):  # never leave a process behind
                pid = json.loads(record.read_text()).get("pid")
                if pid and psutil.pid_exists(pid):
                    os.killpg(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def v1_pod(ctl: Controller, stores: dict[str, Path]) -> dict[str, Any]:
    ctl.apply(sample("torchserve.yaml", stores["good"].as_uri()))
    ctl.wait_ready("torchserve")
    return ready_pod(ctl, "torchserve")


class Neighbour:
    """Predictions sent to the healthy service all along; every one must answer [2]."""

    def __init__(self, port: int) -> None:
        self.port, self.sent, self.failures = port, 0, []  # type: list[str]
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop_event.is_set():
                try:
                    r = client.post(f"http://127.0.0.1:{self.port}/v1/models/mnist:predict",
                                    content=V1)  # fmt: skip
                    if r.status_code != 200 or r.json() != {"predictions": [2]}:
                        self.failures.append(f"{r.status_code} {r.text}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.sent += 1
                time.sleep(0.05)


@pytest.fixture(scope="module")
def neighbour(v1_pod: dict[str, Any]) -> Iterator[Neighbour]:
    traffic = Neighbour(port_of(v1_pod))
    traffic.thread.start()
    yield traffic
    traffic.stop_event.set()
    traffic.thread.join(30)


def test_v1_seed_from_file_uri_is_ready_with_kserve_status(
    ctl: Controller, v1_pod: dict[str, Any]
) -> None:
    obj = ctl.isvc("torchserve")
    status = obj["status"]
    assert status["url"] == "http://torchserve.default.example.com"
    assert status["deploymentMode"] == "Knative"
    assert status["clusterServingRuntimeName"] == "kserve-marserve"
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    pred = status["components"]["predictor"]
    assert (
        pred["latestCreatedRevision"] == pred["latestReadyRevision"] == "torchserve-predictor-00001"
    )
    assert pred["traffic"] == [{"latestRevision": True, "percent": 100,
                                "revisionName": "torchserve-predictor-00001"}]  # fmt: skip
    assert status["modelStatus"]["states"]["activeModelState"] == "Loaded"
    assert status["modelStatus"]["copies"]["totalCopies"] == 1
    name = v1_pod["metadata"]["name"]
    assert name.startswith("torchserve-predictor-00001-deployment-")
    container = v1_pod["status"]["containerStatuses"][0]
    assert container["name"] == "kserve-container" and container["restartCount"] == 0
    response = predict_v1(port_of(v1_pod))
    assert response.status_code == 200 and response.json() == {"predictions": [2]}
    log = ctl.api.get(f"{PODS}/{name}/log").text
    assert "POST /v1/models/mnist:predict" in log or "mnist" in log
    route = next(s for s in ctl.sink.services if s.name == "torchserve")
    assert "torchserve.default.example.com" in route.hosts
    assert route.revisions[0].endpoints[0].port == port_of(v1_pod)


def test_kubernetes_client_reads_isvc_pods_and_logs(
    ctl: Controller, v1_pod: dict[str, Any]
) -> None:
    """What the KServe SDK's wait_isvc_ready reads, through the kubernetes client."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(ctl.home / "kubeconfig"))
    try:
        isvc = client.CustomObjectsApi(api).get_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", "default", "inferenceservices", "torchserve"
        )
        ready = [c for c in isvc["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True"
        assert isvc["status"]["observedGeneration"] >= isvc["metadata"]["generation"]
        core = client.CoreV1Api(api)
        pods = core.list_namespaced_pod(
            "default", label_selector="serving.kserve.io/inferenceservice=torchserve"
        )
        assert [p.metadata.name for p in pods.items] == [v1_pod["metadata"]["name"]]
        assert pods.items[0].status.container_statuses[0].name == "kserve-container"
        log = core.read_namespaced_pod_log(v1_pod["metadata"]["name"], "default", tail_lines=50)
        assert "GET /ping" in log or "mnist" in log
    finally:
        api.close()


def test_replica_is_started_as_the_runtime_container(v1_pod: dict[str, Any]) -> None:
    pid = int(v1_pod["metadata"]["annotations"]["marserve.dev/pid"])
    proc = psutil.Process(pid)
    cmdline = proc.cmdline()
    assert "--disable-token-auth" in cmdline and "--model-store" in cmdline
    env = proc.environ()
    assert env["PROTOCOL_VERSION"] == "v1" and env["TS_SERVICE_ENVELOPE"] == "kserve"
    assert env["INFERENCE_SERVICE_NAME"] == "torchserve"
    assert env["STORAGE_URI"].startswith("file://")
    assert env["K_REVISION"] == "torchserve-predictor-00001"


def test_v2_seed_from_pvc(ctl: Controller, stores: dict[str, Path], neighbour: Neighbour) -> None:
    claim = ctl.home / "pvc" / "model-pv-claim"
    shutil.copytree(stores["good"], claim / "mnist")
    ctl.apply(sample("torchserve-v2.yaml", "pvc://model-pv-claim/mnist"))
    ctl.wait_ready("torchserve-mnist-v2")
    pod = ready_pod(ctl, "torchserve-mnist-v2")
    url = f"http://127.0.0.1:{port_of(pod)}/v2/models/mnist/infer"
    response = httpx.post(url, content=V2, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [0]


def test_grpc_v2_seed_from_gcs_with_two_replicas(ctl: Controller, neighbour: Neighbour) -> None:
    obj = sample("torchserve-grpc-v2.yaml",
                 "gs://kfserving-examples/models/torchserve/image_classifier/v2")  # fmt: skip
    obj["spec"]["predictor"]["minReplicas"] = 2
    ctl.apply(obj)
    ctl.wait_ready("torchserve-grpc-v2")

    def both() -> list[dict[str, Any]] | None:
        pods = ctl.pods("torchserve-grpc-v2")
        ready = [p for p in pods if p["status"].get("containerStatuses", [{}])[0].get("ready")]
        return ready if len(ready) == 2 else None

    pods = wait_for(both, "two ready replicas")
    tensor = np.asarray(json.loads(V2)["inputs"][0]["data"], dtype=np.float32)
    for pod in pods:  # each replica on loopback ports of its own
        infer_input = tc.InferInput("input-0", [1, 28, 28], "FP32")
        infer_input.set_data_from_numpy(tensor.reshape(1, 28, 28))
        client = tc.InferenceServerClient(f"127.0.0.1:{port_of(pod, 'h2c')}")
        try:
            result = client.infer("mnist", [infer_input])
        finally:
            client.close()
        assert result.as_numpy("predict").tolist() == [0]
    assert len({port_of(p, "h2c") for p in pods}) == 2

    def routed() -> ServiceRoute | None:
        route = next((s for s in ctl.sink.services if s.name == "torchserve-grpc-v2"), None)
        return route if route and len(route.revisions[0].endpoints) == 2 else None

    route = wait_for(routed, "both replicas in the route")
    assert route.protocol == "grpc"
    assert {e.grpc_port for e in route.revisions[0].endpoints} == {port_of(p, "h2c") for p in pods}
    assert ctl.api.delete(f"{ISVCS}/torchserve-grpc-v2").status_code == 200


def test_old_schema_seed_from_s3_and_torchserve_predictions(
    ctl: Controller, neighbour: Neighbour
) -> None:
    ctl.apply({**sample("torchserve-old-schema.yaml", "s3://models/torchserve/mnist"),
               "metadata": {"name": "old-schema"}})  # fmt: skip
    obj = ctl.wait_ready("old-schema")
    assert "model" in obj["spec"]["predictor"]  # defaulted from `pytorch:` by admission
    pod = ready_pod(ctl, "old-schema")
    png = (EXAMPLE / "test_data" / "2.png").read_bytes()
    response = httpx.post(f"http://127.0.0.1:{port_of(pod)}/predictions/mnist", content=png)
    assert response.status_code == 200, response.text
    assert response.json() == 2
    assert ctl.api.delete(f"{ISVCS}/old-schema").status_code == 200


def test_gpu_seed_stays_unscheduled(ctl: Controller, neighbour: Neighbour) -> None:
    ctl.apply(yaml.safe_load((SAMPLES / "torchserve-gpu.yaml").read_text()))
    obj = ctl.wait_ready("torchserve-gpu", "False")
    assert "Insufficient nvidia.com/gpu" in condition(obj, "Ready")["message"]
    assert condition(obj, "PredictorReady")["reason"] == "RevisionFailed"
    pods = wait_for(lambda: ctl.pods("torchserve-gpu"), "the pending pod")
    assert pods[0]["status"]["phase"] == "Pending"
    scheduled = pods[0]["status"]["conditions"][0]
    assert scheduled["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in scheduled["message"]
    assert not list((ctl.home / "isvc" / "default" / "torchserve-gpu").rglob("replica.json"))
    assert "FailedScheduling" in reasons(ctl, pods[0]["metadata"]["name"])


def test_broken_storage_is_failed_to_load_then_retried(
    ctl: Controller, tmp_path: Path, stores: dict[str, Path], neighbour: Neighbour
) -> None:
    missing = (tmp_path / "no-such-store").as_uri()
    ctl.apply({**sample("torchserve.yaml", missing), "metadata": {"name": "broken-store"}})
    obj = ctl.wait_ready("broken-store", "False")
    model = obj["status"]["modelStatus"]
    assert model["transitionStatus"] == "BlockedByFailedLoad"
    assert model["states"]["targetModelState"] == "FailedToLoad"
    assert "no-such-store" in model["lastFailureInfo"]["message"]
    assert "no-such-store" in condition(obj, "Ready")["message"]
    (tmp_path / "no-such-store").symlink_to(stores["good"])  # the store appears: the retry serves
    ctl.wait_ready("broken-store")
    assert ctl.api.delete(f"{ISVCS}/broken-store").status_code == 200


def test_an_unknown_predictor_flag_is_invalid_spec(
    ctl: Controller, stores: dict[str, Path], neighbour: Neighbour
) -> None:
    obj = {**sample("torchserve.yaml", stores["good"].as_uri()), "metadata": {"name": "bad-args"}}
    obj["spec"]["predictor"]["model"]["args"] = ["--no-such-flag"]
    ctl.apply(obj)
    status = ctl.wait_ready("bad-args", "False")["status"]
    assert status["modelStatus"]["transitionStatus"] == "InvalidSpec"
    assert "--no-such-flag" in status["modelStatus"]["lastFailureInfo"]["message"]
    assert ctl.pods("bad-args") == []  # nothing was started
    assert ctl.api.delete(f"{ISVCS}/bad-args").status_code == 200


def test_handler_raising_in_initialize_is_crash_loop_backoff(
    ctl: Controller, stores: dict[str, Path], neighbour: Neighbour
) -> None:
    ctl.apply({**sample("torchserve.yaml", stores["bad"].as_uri()),
               "metadata": {"name": "bad-handler"}})  # fmt: skip

    def crashed() -> dict[str, Any] | None:
        pods = ctl.pods("bad-handler")
        status = pods[0]["status"]["containerStatuses"][0] if pods else {}
        message = status.get("lastState", {}).get("terminated", {}).get("message", "")
        return pods[0] if "weights are corrupt" in message else None

    pod = wait_for(crashed, "bad-handler killed for failing its liveness with the error")
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] >= 1
    last = status["lastState"]["terminated"]
    assert last["exitCode"] == 137 and last["reason"] == "Error"
    obj = ctl.isvc("bad-handler")
    info = obj["status"]["modelStatus"]["lastFailureInfo"]
    assert "weights are corrupt" in info["message"] and info["exitCode"] == 137
    assert condition(obj, "Ready")["status"] != "True"
    waiting = wait_for(
        lambda: any(
            p["status"]["containerStatuses"][0]["state"].get("waiting", {}).get("reason")
            == "CrashLoopBackOff"
            for p in ctl.pods("bad-handler")
        ),
        "CrashLoopBackOff",
    )
    assert waiting
    assert {"Scheduled", "Started", "Unhealthy", "BackOff"} <= reasons(ctl, pod["metadata"]["name"])


def test_sigkilled_replica_is_restarted(ctl: Controller, neighbour: Neighbour) -> None:
    pod = ready_pod(ctl, "torchserve-mnist-v2")
    os.kill(int(pod["metadata"]["annotations"]["marserve.dev/pid"]), signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        pods = ctl.pods("torchserve-mnist-v2")
        status = pods[0]["status"]["containerStatuses"][0] if pods else {}
        return pods[0] if status.get("restartCount") == 1 and status.get("ready") else None

    pod = wait_for(restarted, "the killed replica back and ready")
    last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (137, "Error")
    ctl.wait_ready("torchserve-mnist-v2")
    response = httpx.post(f"http://127.0.0.1:{port_of(pod)}/v2/models/mnist/infer", content=V2)
    assert response.status_code == 200


def test_the_neighbour_never_failed(neighbour: Neighbour) -> None:
    assert neighbour.sent > 10
    assert neighbour.failures == []


def test_canary_splits_traffic_between_revisions(ctl: Controller, stores: dict[str, Path]) -> None:
    new = stores["good"].parent / "good-v2"
    if not new.exists():
        shutil.copytree(stores["good"], new)
    obj = sample("torchserve.yaml", new.as_uri())
    obj["spec"]["predictor"]["canaryTrafficPercent"] = 20
    ctl.apply(obj)

    def split() -> list[Any] | None:
        pred = ctl.isvc("torchserve")["status"]["components"]["predictor"]
        traffic = [(t["revisionName"][-5:], t["percent"], t.get("tag")) for t in pred["traffic"]]
        return traffic if traffic == [("00002", 20, None), ("00001", 80, "prev")] else None

    assert wait_for(split, "the 20/80 split")
    ctl.wait_ready("torchserve")
    revisions = {
        p["metadata"]["labels"]["serving.knative.dev/revision"] for p in ctl.pods("torchserve")
    }
    assert revisions == {"torchserve-predictor-00001", "torchserve-predictor-00002"}


def test_controller_restart_keeps_serving(ctl: Controller) -> None:
    pod = ready_pod(ctl, "torchserve-mnist-v2")
    pid = pod["metadata"]["annotations"]["marserve.dev/pid"]
    ctl.stop()
    url = f"http://127.0.0.1:{port_of(pod)}/v2/models/mnist/infer"
    assert httpx.post(url, content=V2, timeout=30).status_code == 200  # no controller at all
    ctl.start()
    ctl.wait_ready("torchserve-mnist-v2")
    again = ready_pod(ctl, "torchserve-mnist-v2")
    assert again["metadata"]["annotations"]["marserve.dev/pid"] == pid  # adopted, not restarted
    assert httpx.post(url, content=V2, timeout=30).status_code == 200


def test_a_replica_that_died_while_the_controller_was_down_is_restarted(ctl: Controller) -> None:
    pod = ready_pod(ctl, "torchserve-mnist-v2")
    before = pod["status"]["containerStatuses"][0]["restartCount"]
    ctl.stop()
    os.killpg(int(pod["metadata"]["annotations"]["marserve.dev/pid"]), signal.SIGKILL)
    ctl.start()

    def back() -> dict[str, Any] | None:
        pods = ctl.pods("torchserve-mnist-v2")
        status = pods[0]["status"]["containerStatuses"][0] if pods else {}
        return pods[0] if status.get("ready") and status["restartCount"] == before + 1 else None

    pod = wait_for(back, "the replica restarted by the new controller")
    last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["reason"] == "ContainerStatusUnknown"
    ctl.wait_ready("torchserve-mnist-v2")


def test_delete_stops_every_process_and_removes_folders(ctl: Controller) -> None:
    pods = ctl.pods("torchserve-mnist-v2")
    pids = [int(p["metadata"]["annotations"]["marserve.dev/pid"]) for p in pods]
    assert ctl.api.delete(f"{ISVCS}/torchserve-mnist-v2").status_code == 200
    wait_for(lambda: not ctl.pods("torchserve-mnist-v2"), "the pods deleted")
    wait_for(lambda: not any(psutil.pid_exists(p) for p in pids), "the processes gone", 30)
    folder = ctl.home / "isvc" / "default" / "torchserve-mnist-v2"
    wait_for(lambda: not folder.exists(), "the folder removed", 30)


def start_cli_controller(home: Path, log: Path) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    """``marserve controller`` as a user runs it, its API found through the kubeconfig it writes."""
    (home / "kubeconfig").unlink(missing_ok=True)
    command = [sys.executable, "-m", "marserve", "controller", "--port", "0",
               "--gateway-port", "0", "--home", str(home)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MARSERVE_CRASH_BACKOFF_S": "0.5"}
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    doc = yaml.safe_load(wait_for(lambda: _read(home / "kubeconfig"), "kubeconfig"))
    api = httpx.Client(
        base_url=doc["clusters"][0]["cluster"]["server"],
        headers={"Authorization": f"Bearer {doc['users'][0]['user']['token']}"},
    )
    wait_for(lambda: _ok(api, "/version"), "the API")
    return process, api


def test_cli_controller_restart_adopts_replicas_and_delete_stops_them(
    tmp_path: Path, stores: dict[str, Path]
) -> None:
    home, log = tmp_path / "home", tmp_path / "controller.log"
    home.mkdir()
    process, api = start_cli_controller(home, log)
    pids: list[int] = []
    try:
        response = api.post(ISVCS, json=sample("torchserve.yaml", stores["good"].as_uri()))
        assert response.status_code == 201, response.text
        ready = lambda: condition(api.get(f"{ISVCS}/torchserve").json(), "Ready").get("status")  # noqa: E731
        wait_for(lambda: ready() == "True", f"Ready True\n{log.read_text()}")
        pod = api.get(PODS).json()["items"][0]
        pids.append(int(pod["metadata"]["annotations"]["marserve.dev/pid"]))
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) in (0, -signal.SIGTERM), log.read_text()
        api.close()
        assert predict_v1(port_of(pod)).json() == {"predictions": [2]}  # served with no controller
        process, api = start_cli_controller(home, log)
        wait_for(lambda: ready() == "True", "Ready True after the restart")
        again = api.get(PODS).json()["items"]
        assert [p["metadata"]["annotations"]["marserve.dev/pid"] for p in again] == [str(pids[0])]
        assert again[0]["status"]["containerStatuses"][0]["restartCount"] == 0
        assert predict_v1(port_of(pod)).json() == {"predictions": [2]}
        assert api.delete(f"{ISVCS}/torchserve").status_code == 200
        wait_for(lambda: not api.get(PODS).json()["items"], "the pods deleted")
        wait_for(lambda: not psutil.pid_exists(pids[0]), "the replica stopped", 30)
        assert not (home / "isvc" / "default" / "torchserve").exists()
    finally:
        api.close()
        process.terminate()
        process.wait(30)
        for pid in pids:
            if psutil.pid_exists(pid):
                os.killpg(pid, signal.SIGKILL)
