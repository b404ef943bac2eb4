"""Explanations end to end: v1, v2 and /explanations against Captum run directly, and pictures."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from PIL import Image

from marserve.handlers.loader import import_module_file
from tests.e2e.conftest import EXAMPLE
from tests.e2e.server import RunningServer, snapshot, start_server, write_config

V1_SAMPLE = EXAMPLE / "requests" / "v1" / "mnist.json"
V2_TENSOR = EXAMPLE / "requests" / "v2" / "mnist_v2_tensor.json"


def png(digit: int) -> bytes:
    return (EXAMPLE / "test_data" / f"{digit}.png").read_bytes()


def b64(digit: int) -> str:
    return base64.b64encode(png(digit)).decode()


def normalised(image: bytes) -> np.ndarray:
    """A PNG as the example handler feeds it to the model: 1 x 28 x 28, MNIST-normalised."""
    with Image.open(io.BytesIO(image)) as picture:
        pixels = np.asarray(picture.convert("L"), dtype=np.float32) / 255.0
    return ((pixels - 0.1307) / 0.3081)[np.newaxis]


class Reference:
    """Captum's integrated gradients on the example's model, computed in this process."""

    def __init__(self) -> None:
        module = import_module_file(EXAMPLE / "mnist.py", "explain_e2e_mnist_model")
        self.model = module.Net()
        state = torch.load(EXAMPLE / "mnist_cnn.pt", map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.eval()

    def predicted(self, row: np.ndarray) -> int:
        with torch.no_grad():
            return int(self.model(torch.from_numpy(row[np.newaxis])).argmax(1))

    def attributions(self, row: np.ndarray, target: int | None = None, n_steps: int = 50) -> Any:
        """(attributions, delta) for one normalised 1 x 28 x 28 input."""
        target = self.predicted(row) if target is None else target
        inputs = torch.from_numpy(np.ascontiguousarray(row, dtype=np.float32)[np.newaxis])
        explainer = IntegratedGradients(self.model)
        result, delta = explainer.attribute(
            inputs, target=target, n_steps=n_steps, return_convergence_delta=True
        )
        return result[0].double().numpy(), float(delta[0])


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference()


def assert_same(server_value: Any, expected: np.ndarray) -> None:
    """Equal within 1e-6 relative to the map's largest magnitude."""
    scale = float(np.abs(expected).max())
    actual = np.asarray(server_value, dtype=np.float64)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6 * scale)


def picture_size(body: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(body)) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mnist_store: Path) -> Iterator[RunningServer]:
    """The example served with dynamic batching, so several images share one worker batch."""
    tmp = tmp_path_factory.mktemp("explain-server")
    model = {"name": "mnist", "marName": "mnist.mar", "batchSize": 8, "maxBatchDelay": 50}
    config = write_config(tmp / "config.properties", model_snapshot=snapshot(model))
    running = start_server(tmp, mnist_store / "model-store", config)
    yield running
    assert running.stop() == 0, running.log()


# the seeds' requests -------------------------------------------------------------------------
def test_v1_seed_request_explains_target_0_shaped_like_the_input(
    server: RunningServer, reference: Reference
) -> None:
    output = subprocess.run(
        ["curl", "-s", f"{server.url}/v1/models/mnist:explain", "-d", f"@{V1_SAMPLE}"],
        check=True,
        capture_output=True,
    ).stdout
    body = json.loads(output)
    assert list(body) == ["explanations"]
    [explanation] = body["explanations"]
    assert np.asarray(explanation).shape == (1, 28, 28)  # [1][28][28] as in the seeds
    instance = json.loads(V1_SAMPLE.read_bytes())["instances"][0]
    assert instance["target"] == 0
    expected, _ = reference.attributions(normalised(base64.b64decode(instance["data"])), 0)
    assert_same(explanation, expected)


def test_v2_seed_request_answers_one_fp64_map(server: RunningServer, reference: Reference) -> None:
    for path in ("/v2/models/mnist/explain", "/v2/models/mnist/versions/1.0/explain"):
        response = server.client.post(path, content=V2_TENSOR.read_bytes())
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == "d3b15cad-50a2-4eaf-80ce-8b0a428bd298"
        assert (body["model_name"], body["model_version"]) == ("mnist", "1.0")
        [output] = body["outputs"]
        assert (output["name"], output["datatype"], output["shape"]) == (
            "explain",
            "FP64",
            [1, 28, 28],
        )
        row = np.asarray(json.loads(V2_TENSOR.read_bytes())["inputs"][0]["data"], np.float32)
        assert reference.predicted(row.reshape(1, 28, 28)) == 0  # the drawn zero
        expected, _ = reference.attributions(row.reshape(1, 28, 28))
        assert_same(np.reshape(output["data"], output["shape"]), expected)


# batches ------------------------------------------------------------------------------------
def test_v1_explains_every_instance_of_a_batch(server: RunningServer, reference: Reference) -> None:
    digits = (3, 1, 4, 1, 5)
    instances: list[dict[str, Any]] = [{"data": b64(d)} for d in digits]
    instances[2]["target"] = 9
    instances[4]["n_steps"] = 20
    response = server.client.post("/v1/models/mnist:explain", json={"instances": instances})
    assert response.status_code == 200, response.text
    explanations = response.json()["explanations"]
    assert len(explanations) == len(digits)
    for index, digit in enumerate(digits):
        target = 9 if index == 2 else None
        steps = 20 if index == 4 else 50
        expected, _ = reference.attributions(normalised(png(digit)), target, steps)
        assert_same(explanations[index], expected)


def test_v2_bytes_batch_with_request_parameters(
    server: RunningServer, reference: Reference
) -> None:
    digits = (2, 7, 8)
    request = {
        "inputs": [
            {"name": "input-0", "shape": [3], "datatype": "BYTES", "data": [b64(d) for d in digits]}
        ],
        "parameters": {"target": 3, "n_steps": 16, "return_delta": True},
    }
    response = server.client.post("/v2/models/mnist/explain", json=request)
    assert response.status_code == 200, response.text
    explain, delta = response.json()["outputs"]
    assert (explain["name"], explain["datatype"], explain["shape"]) == (
        "explain",
        "FP64",
        [3, 1, 28, 28],
    )
    assert (delta["name"], delta["datatype"], delta["shape"]) == ("convergence_delta", "FP64", [3])
    maps = np.reshape(explain["data"], explain["shape"])
    for index, digit in enumerate(digits):
        expected, expected_delta = reference.attributions(normalised(png(digit)), 3, 16)
        assert_same(maps[index], expected)
        # the delta subtracts nearly equal float32 sums: compare it absolutely
        assert delta["data"][index] == pytest.approx(expected_delta, abs=1e-5)


def test_torchserve_explanations_take_query_options(
    server: RunningServer, reference: Reference
) -> None:
    for path in ("/explanations/mnist", "/explanations/mnist/1.0"):
        response = server.client.post(f"{path}?target=5&n_steps=12", content=png(6))
        assert response.status_code == 200, response.text
        expected, _ = reference.attributions(normalised(png(6)), 5, 12)
        assert_same(response.json(), expected)
    plain = server.client.post("/explanations/mnist", content=png(6))
    assert_same(plain.json(), reference.attributions(normalised(png(6)))[0])


def test_v1_and_torchserve_report_the_delta_when_asked(
    server: RunningServer, reference: Reference
) -> None:
    instance = {"data": b64(3), "return_delta": True, "n_steps": 20}
    v1 = server.client.post("/v1/models/mnist:explain", json={"instances": [instance]})
    ts = server.client.post("/explanations/mnist?return_delta=true&n_steps=20", content=png(3))
    expected, delta = reference.attributions(normalised(png(3)), None, 20)
    for item in (v1.json()["explanations"][0], ts.json()):
        assert set(item) == {"attributions", "convergence_delta"}
        assert_same(item["attributions"], expected)
        assert item["convergence_delta"] == pytest.approx(delta, abs=1e-5)


def test_concurrent_explanations_each_get_their_own(
    server: RunningServer, reference: Reference
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def explain(digit: int) -> Any:
        return server.client.post("/explanations/mnist", content=png(digit)).json()

    digits = [0, 9, 6, 2]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(explain, digits))
    for digit, result in zip(digits, results, strict=True):
        assert_same(result, reference.attributions(normalised(png(digit)))[0])


# worker memory -------------------------------------------------------------------------------
def minor_faults(pids: list[int]) -> int:
    """Minor page faults so far of these processes (field 10 of /proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text()
        total += int(stat.rsplit(")", 1)[1].split()[7])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and glibc malloc")
def test_workers_reuse_their_memory_from_one_explanation_to_the_next(
    server: RunningServer,
) -> None:
    """One explanation's activations are freed and needed again by the next: a worker keeps
    them (see marserve.workers.tuning) instead of faulting in about 5,000 fresh pages each time."""
    request = ("/explanations/mnist?n_steps=50", png(2))
    for _ in range(3):  # every worker has seen these shapes once
        assert server.client.post(request[0], content=request[1]).status_code == 200
    workers = server.worker_pids()
    before = minor_faults(workers)
    for _ in range(5):
        assert server.client.post(request[0], content=request[1]).status_code == 200
    assert minor_faults(workers) - before < 5 * 1_000


# pictures -----------------------------------------------------------------------------------
def test_pictures_on_every_explain_endpoint(server: RunningServer) -> None:
    v1 = server.client.post(
        "/v1/models/mnist:explain",
        json={"instances": [{"data": b64(4)}, {"data": b64(7)}]},
        headers={"Accept": "image/png"},
    )
    assert v1.status_code == 200, v1.text
    assert v1.headers["content-type"] == "image/png"
    assert picture_size(v1.content) == (2 * 224, 224)
    v2 = server.client.post("/v2/models/mnist/explain?format=png", content=V2_TENSOR.read_bytes())
    assert v2.headers["content-type"] == "image/png"
    assert picture_size(v2.content) == (224, 224)
    ts = server.client.post("/explanations/mnist?format=png&target=1", content=png(1))
    assert ts.headers["content-type"] == "image/png"
    assert picture_size(ts.content) == (224, 224)


def test_marserve_explain_command_writes_a_heatmap(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "heat.png"
    result = subprocess.run(
        [sys.executable, "-m", "marserve", "explain", "--url", server.url, "--model", "mnist",
         "--input", str(EXAMPLE / "test_data" / "0.png"),
         "--input", str(EXAMPLE / "test_data" / "3.png"), "--n-steps", "10", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert picture_size(out.read_bytes()) == (448, 224)
    missing = subprocess.run(
        [sys.executable, "-m", "marserve", "explain", "--url", server.url, "--model", "nope",
         "--input", str(EXAMPLE / "test_data" / "0.png"), "--out", str(tmp_path / "x.png")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 1
    assert "HTTP 404" in missing.stderr and "nope" in missing.stderr


# bad requests ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_steps": 0}, "n_steps must be between 1 and 500, got 0"),
        ({"n_steps": 10_000}, "n_steps must be between 1 and 500"),
        ({"n_steps": "many"}, "n_steps must be an integer"),
        ({"target": 10}, "target must be below 10"),
        ({"target": -3}, "target must be >= 0"),
        ({"return_delta": "perhaps"}, "return_delta must be true or false"),
    ],
)
def test_bad_options_are_400_on_every_protocol(
    server: RunningServer, options: dict[str, Any], message: str
) -> None:
    v1 = server.client.post(
        "/v1/models/mnist:explain", json={"instances": [{"data": b64(1), **options}]}
    )
    assert v1.status_code == 400 and message in v1.json()["error"]
    request = json.loads(V2_TENSOR.read_bytes())
    request["parameters"] = options
    v2 = server.client.post("/v2/models/mnist/explain", json=request)
    assert v2.status_code == 400 and message in v2.json()["error"]
    query = "&".join(f"{key}={value}" for key, value in options.items())
    ts = server.client.post(f"/explanations/mnist?{query}", content=png(1))
    assert ts.status_code == 400 and message in ts.json()["message"]


def test_one_bad_instance_fails_its_request_not_its_batch_mates(server: RunningServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def good() -> int:
        return server.client.post("/explanations/mnist", content=png(2)).status_code

    def bad() -> int:
        return server.client.post("/explanations/mnist?target=99", content=png(2)).status_code

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(good if i % 2 else bad) for i in range(6)]
        codes = [f.result() for f in futures]
    assert codes == [400, 200] * 3


def test_an_unknown_picture_format_is_400(server: RunningServer) -> None:
    response = server.client.post(
        "/v1/models/mnist:explain?format=gif", json={"instances": [{"data": b64(1)}]}
    )
    assert response.status_code == 400
    assert "format must be png or json" in response.json()["error"]


# models that cannot explain -----------------------------------------------------------------
class Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


@pytest.fixture(scope="module")
def no_explain_server(
    tmp_path_factory: pytest.TempPathFactory, mnist_store: Path
) -> Iterator[RunningServer]:
    """MNIST with Captum made unimportable in its workers, and a base_handler model."""
    tmp = tmp_path_factory.mktemp("no-explain")
    store = tmp / "model-store"
    store.mkdir()
    (store / "mnist.mar").write_bytes((mnist_store / "model-store" / "mnist.mar").read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
        torch.jit.save(torch.jit.script(Linear()), str(tmp / "linear.pt"))
    subprocess.run(
        [sys.executable, "-m", "marserve", "archive", "--model-name", "linear", "--version", "1.0",
         "--serialized-file", str(tmp / "linear.pt"), "--handler", "base_handler",
         "--export-path", str(store)],
        check=True, capture_output=True,
    )  # fmt: skip
    hidden = tmp / "no-captum" / "captum"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('captum is hidden by this test')\n")
    models = snapshot(
        {"name": "mnist", "marName": "mnist.mar"}, {"name": "linear", "marName": "linear.mar"}
    )
    config = write_config(tmp / "config.properties", model_snapshot=models)
    running = start_server(tmp, store, config, env={"PYTHONPATH": str(hidden.parent)})
    yield running
    assert running.stop() == 0, running.log()


def test_without_captum_explain_is_501_naming_the_extra(no_explain_server: RunningServer) -> None:
    client = no_explain_server.client
    v1 = client.post("/v1/models/mnist:explain", json={"instances": [{"data": b64(1)}]})
    assert v1.status_code == 501
    assert "pip install 'marserve[explain]'" in v1.json()["error"]
    ts = client.post("/explanations/mnist", content=png(1))
    assert ts.status_code == 501 and "marserve[explain]" in ts.json()["message"]
    assert client.post("/predictions/mnist", content=png(1)).json() == 1  # predictions still work


def test_models_without_explanations_are_501(no_explain_server: RunningServer) -> None:
    client = no_explain_server.client
    v1 = client.post("/v1/models/linear:explain", json={"instances": [{"data": [1.0, 2.0, 3.0]}]})
    assert v1.status_code == 501
    assert v1.json()["error"] == "BaseHandler does not implement explanations (get_insights)"
    request = {"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]}
    v2 = client.post("/v2/models/linear/explain", json=request)
    assert v2.status_code == 501 and "does not implement explanations" in v2.json()["error"]
