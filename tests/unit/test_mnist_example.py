"""The MNIST example: model, handler on the seeds' requests and images, store builder, config."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import struct
import sys
import zipfile
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from marserve.handlers import Context, PredictionException, load_entry_point
from marserve.handlers.loader import import_module_file

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mnist"
MANIFEST = {
    "runtime": "python",
    "model": {
        "modelName": "mnist",
        "modelVersion": "1.0",
        "handler": "mnist_handler.py",
        "modelFile": "mnist.py",
        "serializedFile": "mnist_cnn.pt",
    },
    "archiverVersion": "0.12.0",
}
ARCHIVER = Path(sys.executable).parent / "torch-model-archiver"


def load_json(relative: str) -> Any:
    return json.loads((EXAMPLE / relative).read_text())


@pytest.fixture(scope="module")
def mnist() -> Any:
    """The example handler, loaded as the worker loads it, from the example folder."""
    saved = list(sys.path)
    ctx = Context("mnist", str(EXAMPLE), MANIFEST, 1, None, "0.1.0")
    entry = load_entry_point("mnist_handler.py", EXAMPLE, ctx)
    sys.path[:] = saved

    def predict(*rows: dict[str, Any]) -> list[Any]:
        ctx.begin_batch([f"r{i}" for i in range(len(rows))], [{} for _ in rows])
        return entry(list(rows), ctx)

    return predict


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_net_loads_the_weights_strictly_with_weights_only() -> None:
    module = import_module_file(EXAMPLE / "mnist.py", "mnist_example_model")
    net = module.Net()
    state = torch.load(EXAMPLE / "mnist_cnn.pt", map_location="cpu", weights_only=True)
    result = net.load_state_dict(state, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_the_ten_test_images_predict_their_digits(mnist: Any) -> None:
    images = [(EXAMPLE / "test_data" / f"{d}.png").read_bytes() for d in range(10)]
    assert mnist(*({"body": image} for image in images)) == list(range(10))
    assert [mnist({"data": image})[0] for image in images] == list(range(10))


def test_seeds_v1_request_predicts_2(mnist: Any) -> None:
    instances = load_json("requests/v1/mnist.json")["instances"]
    assert mnist(*instances) == [2]
    assert mnist(*instances, *instances) == [2, 2]  # static batching: one answer per instance


def test_seeds_v2_tensor_request_a_drawn_0_predicts_0(mnist: Any) -> None:
    [tensor] = load_json("requests/v2/mnist_v2_tensor.json")["inputs"]
    assert tensor["shape"] == [1, 28, 28]
    assert mnist({"data": tensor["data"]}) == [0]
    array = np.asarray(tensor["data"], dtype=np.float32)
    assert mnist({"data": array}, {"data": array[0]}, {"data": array.reshape(784)}) == [0, 0, 0]


def test_seeds_v2_bytes_request_predicts_the_0_it_shows(mnist: Any) -> None:
    [tensor] = load_json("requests/v2/mnist_v2_bytes.json")["inputs"]
    [encoded] = tensor["data"]
    picture = Image.open(io.BytesIO(base64.b64decode(encoded)))
    assert picture.size == (28, 28)
    # The picture is a 0: a ring of ink with an empty middle.
    pixels = np.asarray(picture.convert("L"))
    assert pixels[14, 13] < 50 and pixels[14, 7:9].max() > 150 and pixels[14, 20:23].max() > 150
    assert mnist({"data": encoded}) == [0]
    assert mnist({"data": encoded.encode()}) == [0]  # base64 text as a BYTES element
    assert mnist({"data": base64.b64decode(encoded)}) == [0]  # raw PNG (binary extension)


def test_seeds_grpc_requests_predict_the_same(mnist: Any) -> None:
    [tensor] = load_json("requests/v2/mnist_v2_tensor_grpc.json")["inputs"]
    assert mnist({"data": tensor["contents"]["fp32_contents"]}) == [0]
    [image] = load_json("requests/v2/mnist_v2_bytes_grpc.json")["inputs"]
    assert mnist({"data": image["contents"]["bytes_contents"][0]}) == [0]


@pytest.mark.parametrize("text", ["aGVsbG8", "aGVs!!bG8=", "@@@@", "iVBO Rw0K"])
def test_bad_base64_is_400(mnist: Any, text: str) -> None:
    with pytest.raises(PredictionException) as info:
        mnist({"data": text})
    assert info.value.error_code == 400
    assert "base64" in info.value.message


def bomb_header(side: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"this is not an image", "cannot decode image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "cannot decode image"),
        (png(Image.new("L", (32, 32))), "expected a 28x28 image, got 32x32"),
        (bomb_header(10_000), "cannot decode image"),
        (bomb_header(30_000), "cannot decode image"),
        ([[0.0] * 28] * 27, "expected a tensor shaped"),
        (np.zeros((2, 28, 28)), "expected a tensor shaped"),
        ([[float("nan")] * 28] * 28, "NaN"),
        (["a", "b"], "could not convert"),
        ({"nested": 1}, "float"),
    ],
)
def test_bad_rows_are_400_naming_the_row(mnist: Any, value: Any, message: str) -> None:
    good = {"body": (EXAMPLE / "test_data" / "3.png").read_bytes()}
    with pytest.raises(PredictionException) as info:
        mnist(good, {"data": value})
    assert info.value.error_code == 400
    assert info.value.message.startswith("row 1: ")
    assert message in info.value.message


def test_row_without_data_and_empty_batch_are_400(mnist: Any) -> None:
    with pytest.raises(PredictionException, match="no data or body"):
        mnist({"other": 1})
    with pytest.raises(PredictionException, match="non-empty list"):
        mnist()


def test_rgb_image_is_read_as_grey(mnist: Any) -> None:
    grey = Image.open(EXAMPLE / "test_data" / "7.png").convert("L")
    assert mnist({"body": png(grey.convert("RGB"))}) == [7]


def load_build_store() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mnist_build_store", EXAMPLE / "build_store.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_store_makes_the_seeds_layout_and_is_idempotent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build_store = load_build_store()
    out = tmp_path / "store"
    assert build_store.main(["--out", str(out)]) == 0  # python -m marserve archive
    mar = out / "model-store" / "mnist.mar"
    config = out / "config" / "config.properties"
    assert config.read_text() == (EXAMPLE / "config.properties").read_text()
    with zipfile.ZipFile(mar) as archive:
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
        assert sorted(archive.namelist()) == sorted(
            ["MAR-INF/MANIFEST.json", "mnist.py", "mnist_cnn.pt", "mnist_handler.py"]
        )
    assert manifest["model"] == MANIFEST["model"]
    assert f"MNIST model store built: {out}" in capsys.readouterr().out

    stamp = mar.stat().st_mtime_ns
    assert build_store.build_store(out) is False
    assert mar.stat().st_mtime_ns == stamp
    broken = ["/nonexistent/archiver"]
    assert build_store.build_store(out, archiver=broken) is False  # up to date: not even run
    assert build_store.main(["--out", str(out)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert build_store.build_store(out, force=True) is True
    assert mar.stat().st_mtime_ns >= stamp


def test_build_store_rebuilds_when_an_input_is_newer(tmp_path: Path) -> None:
    build_store = load_build_store()
    out = tmp_path / "store"
    assert build_store.build_store(out) is True
    mar = out / "model-store" / "mnist.mar"
    config = out / "config" / "config.properties"
    inputs = ["mnist.py", "mnist_cnn.pt", "mnist_handler.py", "config.properties"]
    old = min((EXAMPLE / name).stat().st_mtime_ns for name in inputs) - 10**10
    os.utime(mar, ns=(old, old))  # both outputs now predate every input
    os.utime(config, ns=(old, old))
    assert build_store.build_store(out) is True
    assert config.stat().st_mtime_ns > old
    assert mar.stat().st_mtime_ns > old


def test_build_store_reports_a_failing_archiver(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build_store = load_build_store()
    failing = f"{sys.executable} -c 'import sys; sys.exit(\"archiver exploded\")'"
    assert build_store.main(["--out", str(tmp_path / "s"), "--archiver", failing]) == 1
    assert "archiver exploded" in capsys.readouterr().err
    assert not (tmp_path / "s" / "model-store" / "mnist.mar").exists()


@pytest.mark.parametrize("archiver", ["marserve", "torch-model-archiver"])
def test_archive_built_by_the_store_script_serves_from_its_extracted_folder(
    tmp_path: Path, archiver: str
) -> None:
    build_store = load_build_store()
    command = None if archiver == "marserve" else [str(ARCHIVER)]
    assert build_store.build_store(tmp_path / "store", archiver=command) is True
    model_dir = tmp_path / "extracted"
    with zipfile.ZipFile(tmp_path / "store" / "model-store" / "mnist.mar") as archive:
        archive.extractall(model_dir)
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
    saved = list(sys.path)
    try:
        ctx = Context("mnist", str(model_dir), manifest, 1, None, "0.1.0")
        entry = load_entry_point(manifest["model"]["handler"], model_dir, ctx)
    finally:
        sys.path[:] = saved
    ctx.begin_batch(["a"], [{}])
    body = (EXAMPLE / "test_data" / "8.png").read_bytes()
    assert entry([{"body": body}], ctx) == [8]


def test_config_is_the_seeds_config_on_loopback() -> None:
    lines = (EXAMPLE / "config.properties").read_text().splitlines()
    props = dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))
    assert props["inference_address"] == "http://127.0.0.1:8085"
    assert props["management_address"] == "http://127.0.0.1:8085"
    assert props["metrics_address"] == "http://127.0.0.1:8082"
    assert (props["grpc_inference_port"], props["grpc_management_port"]) == ("7070", "7071")
    assert props["job_queue_size"] == "100"
    assert props["enable_envvars_config"] == "true"
    assert "model_store" not in props
    snapshot = json.loads(props["model_snapshot"])
    assert snapshot["modelCount"] == 1
    assert snapshot["models"]["mnist"]["1.0"] == {
        "defaultVersion": True,
        "marName": "mnist.mar",
        "minWorkers": 1,
        "maxWorkers": 5,
        "batchSize": 1,
        "maxBatchDelay": 10,
        "responseTimeout": 120,
    }
