"""TorchServe's management API as its own test collection exercises it, against a real server.

The cases follow TorchServe's ``test/postman/management_data.json`` (register, scale, list,
describe, unregister with its documented parameters and the malformed values it tolerates),
with its model URLs replaced by archives in the store. Where marserve answers differently on
purpose (re-registration 409, empty ``url`` 400, negative ``min_worker`` 400), the README's
compatibility section says why, and the case asserts marserve's answer.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import ARCHIVER, run
from tests.e2e.server import RunningServer, start_server, write_config
from tests.unit.vision_models import CLASSIFIER, DETECTOR, SEGMENTER, model_dir

# A fast deterministic failure: well under TorchServe's 120 s startup timeout (CI is slow).
FAIL_FAST_S = 30.0


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, probe_store: Path, ts_mnist_store: Path
) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("ts-api")
    store = tmp / "model-store"
    store.mkdir()
    shutil.copy(probe_store / "probe.mar", store / "probe.mar")
    shutil.copy(ts_mnist_store / "mnist.mar", store / "mnist.mar")
    config = write_config(tmp / "config.properties", enable_model_api="true")
    running = start_server(tmp, store, config)
    running.store = store  # type: ignore[attr-defined]
    running.mgmt = httpx.Client(base_url=running.urls["management"], timeout=120)  # type: ignore[attr-defined]
    yield running
    running.mgmt.close()  # type: ignore[attr-defined]
    assert running.stop() == 0, running.log()


def mgmt(server: RunningServer) -> httpx.Client:
    return server.mgmt  # type: ignore[attr-defined,no-any-return]


def call(server: RunningServer, method: str, path: str) -> httpx.Response:
    """A request as the collection writes it: the query string exactly as given."""
    return mgmt(server).request(method, path)


def status(response: httpx.Response) -> str:
    return str(response.json().get("status", response.json().get("message", "")))


def test_register_starts_no_workers_unless_asked(server: RunningServer) -> None:
    answer = call(server, "POST", "/models?url=probe.mar&model_name=zero")
    assert answer.status_code == 200, answer.text
    assert status(answer) == (
        'Model "zero" Version: 1.0 registered with 0 initial workers. '
        "Use scale workers API to add workers for the model."
    )
    described = call(server, "GET", "/models/zero").json()[0]
    assert (described["minWorkers"], described["maxWorkers"], described["workers"]) == (0, 0, [])
    assert server.client.get("/ping").json() == {"status": "Healthy"}  # it asks for no workers
    again = call(server, "POST", "/models?url=probe.mar&model_name=zero")
    assert again.status_code == 409 and "already registered" in again.json()["message"]
    assert call(server, "DELETE", "/models/zero").status_code == 200


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("runtime=python", 200),
        ("runtime=python3", 200),
        ("runtime=python4", 400),
        ("batch_size=dd&initial_workers=0", 200),  # TorchServe: not a number -> the default
        ("batch_size=2&max_batch_delay=junk", 200),
        ("initial_workers=-1", 200),  # TorchServe: <= 0 -> no workers
        ("synchronous=-1", 200),  # Boolean.parseBoolean: false; no workers -> 200 anyway
        ("synchronous=false", 200),
        ("response_timeout=0", 200),
        ("startup_timeout=30", 200),
        ("s3_sse_kms=true", 200),
        ("handler=serve/ts/torch_handler/image_classifier.py:handle", 200),
        ("handler=invalidHandler", 200),  # not found anywhere: the workers will fail to load
        ("handler=os:system", 400),  # a module outside the archive is never run
        ("intial_workers=1", 400),  # a typo is refused, not ignored
    ],
)
def test_register_parameters(server: RunningServer, query: str, expected: int) -> None:
    answer = call(server, "POST", f"/models?url=probe.mar&model_name=params&{query}")
    try:
        assert answer.status_code == expected, answer.text
        if expected == 200:
            described = call(server, "GET", "/models/params").json()[0]
            assert described["minWorkers"] == 0
            if "batch_size" in query:
                assert described["batchSize"] == (2 if "batch_size=2" in query else 1)
                assert described["maxBatchDelay"] == 100  # "junk" -> the default
            if "timeout" in query:
                assert described["responseTimeout"] == 120  # 0 -> the default
                assert described["startupTimeout"] == (30 if "startup" in query else 120)
        else:
            assert set(answer.json()) == {"code", "type", "message"}
            assert call(server, "GET", "/models/params").status_code == 404
    finally:
        call(server, "DELETE", "/models/params")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/models", 400),  # no url
        ("/models?url=&model_name=probe", 400),  # TorchServe: 404 (README: why 400)
        ("/models?url=nope.mar", 404),
    ],
)
def test_register_without_an_archive(server: RunningServer, path: str, expected: int) -> None:
    assert call(server, "POST", path).status_code == expected


def test_a_handler_that_cannot_be_imported_fails_fast_and_leaves_nothing(
    server: RunningServer,
) -> None:
    started = time.monotonic()
    answer = call(
        server,
        "POST",
        "/models?url=probe.mar&model_name=broken&handler=invalidHandler"
        "&initial_workers=1&synchronous=true",
    )
    assert answer.status_code == 500, answer.text
    assert time.monotonic() - started < FAIL_FAST_S
    assert "invalidHandler" in status(answer) and "not found" in status(answer)
    assert call(server, "GET", "/models/broken").status_code == 404
    assert "broken" not in call(server, "GET", "/models").text
    # registered with 0 workers, then scaled: the scale fails fast too, and the model stays
    assert call(server, "POST", "/models?url=probe.mar&model_name=broken&handler=invalidHandler")
    started = time.monotonic()
    scaled = call(server, "PUT", "/models/broken?min_worker=1&synchronous=true")
    assert scaled.status_code == 500 and "invalidHandler" in status(scaled)
    assert time.monotonic() - started < FAIL_FAST_S
    assert call(server, "DELETE", "/models/broken").status_code == 200


def test_scale_parameters(server: RunningServer) -> None:
    assert call(server, "POST", "/models?url=probe.mar&model_name=scaled").status_code == 200
    try:
        synchronous = call(server, "PUT", "/models/scaled?min_worker=1&synchronous=true")
        assert synchronous.status_code == 200, synchronous.text
        assert server.client.post("/predictions/scaled", json={}).status_code == 200
        for query, expected in [
            ("min_worker=1", 202),
            ("min_worker=1&number_gpu=1", 202),
            ("number_gpu=-1", 202),
            ("timeout=-1", 202),
            ("timeout=0", 202),
            ("min_worker=1&synchronous=Nan", 202),
            ("min_worker=nan&synchronous=nan", 202),  # TorchServe: both fall back to defaults
            ("min_worker=2&max_worker=1", 400),
            ("max_worker=-1", 400),
            ("min_worker=-1", 400),  # TorchServe: 500 (README: why 400)
        ]:
            answer = call(server, "PUT", f"/models/scaled?{query}")
            assert answer.status_code == expected, (query, answer.text)
        assert call(server, "PUT", "/models/scaled/0.0?min_worker=1").status_code == 404
        assert call(server, "PUT", "/models/nope?min_worker=1").status_code == 404
        default = call(server, "PUT", "/models/scaled")  # no parameters: min 1, max = min
        assert default.status_code == 202
        described = call(server, "GET", "/models/scaled/all").json()[0]
        assert (described["minWorkers"], described["maxWorkers"]) == (1, 1)
    finally:
        assert call(server, "DELETE", "/models/scaled/?synchronous=true").status_code == 200


@pytest.mark.parametrize(
    "query",
    ["limit=&next_page_token=", "limit=1", "limit=-1", "limit=1&next_page_token=1",
     "limit=1&next_page_token=-1", "next_page_token=12", "limit=1000"],
)  # fmt: skip
def test_list_parameters(server: RunningServer, query: str) -> None:
    for name in ("listed_a", "listed_b"):
        call(server, "POST", f"/models?url=probe.mar&model_name={name}")
    try:
        answer = call(server, "GET", f"/models?{query}")
        assert answer.status_code == 200, answer.text
        names = [m["modelName"] for m in answer.json()["models"]]
        expected = {
            "limit=1": ["listed_a"],
            "limit=1&next_page_token=1": ["listed_b"],
            "limit=1&next_page_token=-1": ["listed_a"],
            "next_page_token=12": [],
        }.get(query, ["listed_a", "listed_b"])
        assert names == expected
    finally:
        for name in ("listed_a", "listed_b"):
            call(server, "DELETE", f"/models/{name}")


@pytest.mark.parametrize("query", ["synchronous=true", "synchronous=nan", "timeout=true",
                                   "timeout=true&synchronous=-1"])  # fmt: skip
def test_unregister_parameters(server: RunningServer, query: str) -> None:
    assert call(server, "POST", "/models?url=probe.mar&model_name=gone").status_code == 200
    assert call(server, "DELETE", f"/models/gone/?{query}").status_code == 200
    assert call(server, "GET", "/models/gone").status_code == 404


def test_options_on_the_metrics_listener(server: RunningServer) -> None:
    answer = httpx.request("OPTIONS", server.urls["metrics"] + "/")
    assert answer.status_code == 200
    assert "/metrics" in answer.json()["paths"]


def test_token_auth_with_torchserves_test_config(tmp_path: Path, probe_store: Path) -> None:
    """``token_expiration_min=0.25`` (TorchServe's own test config) starts, keys expire in 15 s;
    a wrong or missing key is 401 with a Bearer challenge (TorchServe: 400; README: why)."""
    config = write_config(tmp_path / "config.properties", token_expiration_min="0.25")
    config.write_text(config.read_text().replace("disable_token_authorization=true\n", ""))
    key_file = tmp_path / "key_file.json"
    running = start_server(tmp_path, probe_store, config, "--key-file", str(key_file), wait=False)
    try:
        document = json.loads(key_file.read_text())
        expires = datetime.fromisoformat(document["inference"]["expiration time"])
        left = (expires - datetime.now(timezone.utc)).total_seconds()
        assert 0 < left <= 15.5, left
        with httpx.Client(base_url=running.urls["management"]) as client:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                refused = client.get("/models", headers=headers)
                assert refused.status_code == 401, refused.text
                assert refused.headers["www-authenticate"].startswith("Bearer")
                assert "Token authorization failed" in refused.json()["message"]
            key = document["management"]["key"]
            listed = client.get("/models", headers={"Authorization": f"Bearer {key}"})
            assert listed.status_code == 200, listed.text
    finally:
        assert running.stop() == 0, running.log()


def red_png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (255, 0, 0)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "source", "archived_as", "handler"),
    [
        ("detector", DETECTOR, "object_detector", None),
        ("segmenter", SEGMENTER, "image_segmenter", None),
        ("densenet", CLASSIFIER, "image_classifier", "densenet_handler"),  # the API's handler
    ],
)
def test_torchserve_vision_builtins_serve_without_torchvision(
    server: RunningServer, tmp_path: Path, name: str, source: str, archived_as: str,
    handler: str | None,
) -> None:  # fmt: skip
    folder = model_dir(tmp_path / name, source, '{"1": "whole", "0": "first"}')
    run(ARCHIVER, "--model-name", name, "--version", "1.0", "--model-file", folder / "model.py",
        "--serialized-file", folder / "model.pt", "--extra-files", folder / "index_to_name.json",
        "--handler", archived_as, "--export-path", server.store)  # type: ignore[attr-defined]  # fmt: skip
    query = f"url={name}.mar&initial_workers=1&synchronous=true"
    answer = call(server, "POST", f"/models?{query}" + (f"&handler={handler}" if handler else ""))
    try:
        assert answer.status_code == 200, answer.text
        reply = server.client.post(f"/predictions/{name}", content=red_png((20, 10)))
        assert reply.status_code == 200, reply.text
        body = reply.json()
        if name == "detector":
            assert body == [{"whole": [0.0, 0.0, 20.0, 10.0], "score": 1.0}]
        elif name == "segmenter":
            assert len(body) == 224 and len(body[0]) == 224 and body[0][0][0] == 1.0
        else:
            assert len(body) == 5 and next(iter(body[0])) == "first"
    finally:
        call(server, "DELETE", f"/models/{name}")


DESCRIBED = """
class Described:
    def initialize(self, context):
        self.initialized = True

    def handle(self, data, context):
        return [{"ok": True} for _ in data]

    def describe_handle(self):
        return '{"inputs": "an image", "answer": "a digit"}'
"""


def test_describe_customized_asks_the_handler(server: RunningServer, tmp_path: Path) -> None:
    (tmp_path / "described.py").write_text(DESCRIBED)
    (tmp_path / "empty.bin").write_bytes(b"")
    run(ARCHIVER, "--model-name", "described", "--version", "1.0", "--serialized-file",
        tmp_path / "empty.bin", "--handler", tmp_path / "described.py",
        "--export-path", server.store)  # type: ignore[attr-defined]  # fmt: skip
    assert call(server, "POST", "/models?url=described.mar").status_code == 200
    try:
        cold = call(server, "GET", "/models/described?customized=true")
        assert cold.status_code == 503  # no worker to ask yet
        assert call(server, "PUT", "/models/described?synchronous=true").status_code == 200
        plain = call(server, "GET", "/models/described").json()[0]
        assert "customizedMetadata" not in plain
        for query in ("?customized=true", "/all?customized=TRUE"):
            described = call(server, "GET", f"/models/described{query}")
            assert described.status_code == 200, described.text
            metadata = described.json()[0]["customizedMetadata"]
            assert json.loads(metadata) == {"inputs": "an image", "answer": "a digit"}
        function = call(server, "POST", "/models?url=probe.mar&model_name=fn&initial_workers=1")
        assert function.status_code == 200  # a function handler has no describe_handle
        assert "customizedMetadata" not in call(server, "GET", "/models/fn?customized=true").text
    finally:
        call(server, "DELETE", "/models/described")
        call(server, "DELETE", "/models/fn")
