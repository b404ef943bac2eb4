"""The seeds' journey on one machine: ``kubectl apply`` the seed YAMLs, wait for READY, then the
seeds' curl commands through the gateway by ``Host`` (and tritonclient gRPC by authority)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tc
import yaml

from tests.e2e.controlplane.conftest import SAMPLES, Controller, start_controller
from tests.e2e.isvc_harness import storage_env, upload_to_gcs, upload_to_s3
from tests.e2e.storage_servers import gcs_emulator, moto_s3

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
REQUESTS = ROOT / "examples" / "mnist" / "requests"
PNG = ROOT / "examples" / "mnist" / "test_data" / "2.png"
NEW_SCHEMA = ("torchserve.yaml", "torchserve-v2.yaml", "torchserve-grpc-v2.yaml")
OLD_SCHEMA = {
    "torchserve-old-schema.yaml": "s3://models/torchserve/mnist",
    "torchserve-v2-old-schema.yaml": "pvc://model-pv-claim/mnist",
}
READY = [("default", "torchserve"), ("default", "torchserve-mnist-v2"),
         ("default", "torchserve-grpc-v2"), ("kserve-test", "torchserve"),
         ("kserve-test", "torchserve-mnist-v2")]  # fmt: skip
INGRESS = (
    "export INGRESS_HOST=$(kubectl -n istio-system get service istio-ingressgateway "
    "-o jsonpath='{.status.loadBalancer.ingress[0].ip}'); "
    "export INGRESS_PORT=$(kubectl -n istio-system get service istio-ingressgateway "
    "-o jsonpath='{.spec.ports[?(@.name==\"http2\")].port}'); "
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, mnist_store: Path) -> Iterator[Controller]:
    """``marserve controller`` with the seeds' YAMLs applied by kubectl and READY.

    Default namespace: the new-schema samples verbatim, their ``gs://kfserving-examples/...``
    served by a GCS emulator. ``kserve-test``: the old-schema samples, v1 from ``s3://`` (moto) and
    v2 from ``pvc://``. The seeds' request files lie in the working directory of ``sh``.
    """
    root = tmp_path_factory.mktemp("seeds-gateway")
    home = root / "home"
    shutil.copytree(mnist_store, home / "pvc" / "model-pv-claim" / "mnist")
    for name, uri in OLD_SCHEMA.items():
        doc = yaml.safe_load((SAMPLES / name).read_text())
        doc["spec"]["predictor"]["pytorch"]["storageUri"] = uri
        (root / name).write_text(yaml.safe_dump(doc))
    for request in ("v1/mnist.json", "v2/mnist_v2_bytes.json", "v2/mnist_v2_tensor.json"):
        shutil.copy(REQUESTS / request, root / Path(request).name)
    shutil.copy(root / "mnist_v2_tensor.json", root / "mnist_v2.json")
    with gcs_emulator() as gcs, moto_s3() as s3:
        upload_to_gcs(
            gcs, mnist_store, [f"models/torchserve/image_classifier/{v}" for v in ["v1", "v2"]]
        )
        upload_to_s3(s3, mnist_store, "models", "torchserve/mnist")
        ctl = start_controller(home, full=True, env=storage_env(gcs, s3))
        ctl.workdir = root
        try:
            for name in NEW_SCHEMA:
                assert "created" in ctl.kubectl("apply", "-f", str(SAMPLES / name)).stdout
            ctl.kubectl("create", "namespace", "kserve-test")
            for name in OLD_SCHEMA:
                ctl.kubectl("apply", "-f", str(root / name), "-n", "kserve-test")
            for ns, isvc in READY:
                ctl.kubectl("wait", "--for=condition=Ready", f"inferenceservice/{isvc}", "-n", ns,
                            "--timeout=300s", timeout=320)  # fmt: skip
            yield ctl
        finally:
            try:  # replicas outlive a stopped controller (the next one adopts them): delete first
                for ns in ("default", "kserve-test"):
                    ctl.kubectl("delete", "inferenceservice", "--all", "-n", ns, "--wait=false")
                deadline = time.monotonic() + 60
                while pods_left(ctl) and time.monotonic() < deadline:
                    time.sleep(0.5)
                assert not pods_left(ctl), f"pods left after delete: {pods_left(ctl)}"
            finally:
                ctl.stop()


def pods_left(ctl: Controller) -> list[str]:
    return ctl.kubectl("get", "pods", "-A", "-o", "name").stdout.split()


def seed_curl(ctl: Controller, isvc: str, path: str, data: str, ns: str = "default") -> str:
    """The seeds' three lines: INGRESS_*, SERVICE_HOSTNAME, then curl with the Host header."""
    done = ctl.sh(
        INGRESS + f"SERVICE_HOSTNAME=$(kubectl get inferenceservice {isvc} -n {ns} "
        "-o jsonpath='{.status.url}' | cut -d \"/\" -f 3); "
        f'curl -sS --fail-with-body -H "Host: ${{SERVICE_HOSTNAME}}" '
        f"http://${{INGRESS_HOST}}:${{INGRESS_PORT}}{path} {data}",
        cwd=ctl.workdir,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_get_isvc_shows_the_url_and_ready(cluster: Controller) -> None:
    table = cluster.kubectl("get", "inferenceservices", "-A").stdout.splitlines()
    assert table[0].split()[:4] == ["NAMESPACE", "NAME", "URL", "READY"]
    rows = {tuple(line.split()[:4]) for line in table[1:]}
    for ns, name in READY:
        assert (ns, name, f"http://{name}.{ns}.example.com", "True") in rows, table


@pytest.mark.parametrize("ns", ["default", "kserve-test"])
def test_v1_predict_and_explain(cluster: Controller, ns: str) -> None:
    predicted = seed_curl(cluster, "torchserve", "/v1/models/mnist:predict", "-d @./mnist.json", ns)
    assert json.loads(predicted) == {"predictions": [2]}
    explained = json.loads(
        seed_curl(cluster, "torchserve", "/v1/models/mnist:explain", "-d @./mnist.json", ns)
    )
    assert np.asarray(explained["explanations"][0]).shape == (1, 28, 28)


def test_torchserve_predictions_png(cluster: Controller) -> None:
    answer = seed_curl(cluster, "torchserve", "/predictions/mnist", f"-T {PNG}")
    assert json.loads(answer) == 2


@pytest.mark.parametrize("ns", ["default", "kserve-test"])
def test_v2_tensor_and_bytes(cluster: Controller, ns: str) -> None:
    for data in ("-d @./mnist_v2.json", "-d @./mnist_v2_bytes.json"):
        answer = seed_curl(cluster, "torchserve-mnist-v2", "/v2/models/mnist/infer", data, ns)
        body = json.loads(answer)
        assert body["outputs"] == [
            {"name": "predict", "shape": [1], "datatype": "INT64", "data": [0]}
        ], body


def test_grpc_v2_through_the_gateway(cluster: Controller) -> None:
    port = cluster.sh(INGRESS + "echo $INGRESS_PORT").stdout.strip()
    status = cluster.kubectl(
        "get", "inferenceservice", "torchserve-grpc-v2", "-o", "jsonpath={.status.url}"
    ).stdout
    authority = status.split("/")[2]
    client = tc.InferenceServerClient(
        f"127.0.0.1:{port}", channel_args=[("grpc.default_authority", authority)]
    )
    try:
        assert client.is_model_ready("mnist")
        document = json.loads((REQUESTS / "v2" / "mnist_v2_tensor.json").read_text())
        tensor = tc.InferInput("input-0", [1, 28, 28], "FP32")
        data = np.asarray(document["inputs"][0]["data"], dtype=np.float32).reshape(1, 28, 28)
        tensor.set_data_from_numpy(data)
        result = client.infer("mnist", [tensor])
        assert result.as_numpy("predict").tolist() == [0]
    finally:
        client.close()


def test_unknown_host_is_a_clear_404(cluster: Controller) -> None:
    done = cluster.sh(
        INGRESS + 'curl -s -o /dev/stderr -w "%{http_code}" -H "Host: nope.default.example.com" '
        "http://${INGRESS_HOST}:${INGRESS_PORT}/v1/models/mnist:predict -d @./mnist.json",
        cwd=cluster.workdir,
    )
    assert done.stdout == "404"
    assert "nope.default.example.com" in done.stderr
