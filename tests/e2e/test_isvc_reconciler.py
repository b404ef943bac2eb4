"""InferenceServices run by the reconciler: the seeds' YAMLs applied through the API, replicas as
real ``marserve serve`` processes reached on their own loopback ports, faults, restart, delete."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as tc
import yaml

from marserve.controlplane.routing import ServiceRoute
from tests.e2e.conftest import EXAMPLE
from tests.e2e.isvc_harness import (
    ISVCS,
    PODS,
    SAMPLES,
    V1,
    V2,
    Controller,
    condition,
    make_stores,
    port_of,
    predict_v1,
    ready_pod,
    reasons,
    sample,
    storage_env,
    upload_to_gcs,
    upload_to_s3,
    wait_for,
)
from tests.e2e.storage_servers import gcs_emulator, moto_s3

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, mnist_store: Path) -> dict[str, Path]:
    return make_stores(tmp_path_factory.mktemp("isvc-stores"), mnist_store)


@pytest.fixture(scope="module")
def gcs(stores: dict[str, Path]) -> Iterator[str]:
    """A GCS emulator holding the good store under the seeds' gs:// path."""
    with gcs_emulator() as host:
        upload_to_gcs(host, stores["good"], ["models/torchserve/image_classifier/v2"])
        yield host


@pytest.fixture(scope="module")
def s3(stores: dict[str, Path]) -> Iterator[str]:
    """A moto S3 server holding the good store under s3://models/torchserve/mnist."""
    with moto_s3() as endpoint:
        upload_to_s3(endpoint, stores["good"], "models", "torchserve/mnist")
        yield endpoint


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory, gcs: str, s3: str) -> Iterator[Controller]:
    home = tmp_path_factory.mktemp("controller-home")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MARSERVE_STORAGE_CACHE": str(home / "cache"),
           **storage_env(gcs, s3)}  # fmt: skip
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
