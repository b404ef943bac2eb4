"""The built-in image_classifier on a tiny TorchScript model, image decoding limits, label maps."""

from __future__ import annotations

import base64
import io
import struct
import sys
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from marserve.handlers import Context, PredictionException, load_entry_point
from marserve.handlers.images import ImageNetTransform, image_bytes, open_image
from marserve.handlers.labels import load_label_mapping, map_class_to_label

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))


class ChannelMeans(nn.Module):
    """Logits = 10 x the mean of each (normalized) colour channel: a red image scores class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) * 10.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny_classifier")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
        torch.jit.save(torch.jit.script(ChannelMeans()), str(path / "model.pt"))
    (path / "index_to_name.json").write_text('{"0": "red", "1": "green", "2": "blue"}')
    return path


@pytest.fixture
def classify(model_dir: Path) -> Any:
    manifest = {"model": {"modelName": "tiny", "serializedFile": "model.pt", "handler": "x"}}
    ctx = Context("tiny", str(model_dir), manifest, 4, None, "0.1.0")
    entry = load_entry_point("image_classifier", model_dir, ctx)

    def run(*values: Any) -> list[Any]:
        ctx.begin_batch([f"r{i}" for i in range(len(values))], [{} for _ in values])
        return entry([{"data": v} for v in values], ctx)

    return run


def encode(image: Image.Image, fmt: str = "PNG", **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def grey_png_header(width: int, height: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def real_bomb() -> bytes:
    """A valid 10,000 x 10,000 grey PNG of zeros: ~100 KB that would decode to 100 MB."""
    side = 10_000
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return grey_png_header(side, side, idat)


def assert_400(excinfo: pytest.ExceptionInfo[PredictionException], text: str) -> None:
    assert excinfo.value.error_code == 400
    assert text in excinfo.value.message


def test_png_is_classified_with_labels_from_the_mapping(classify: Any) -> None:
    [red], [blue] = classify(encode(solid((255, 0, 0)))), classify(encode(solid((0, 0, 255))))
    assert next(iter(red)) == "red"  # top-k comes best first
    assert max(red, key=red.get) == "red"
    assert max(blue, key=blue.get) == "blue"
    assert set(red) == {"red", "green", "blue"}  # topk 5 capped at the model's 3 classes
    assert sum(red.values()) == pytest.approx(1.0, abs=1e-5)


def test_batch_of_mixed_encodings(classify: Any) -> None:
    green = solid((0, 255, 0))
    frames = [solid((0, 255, 0)), solid((255, 0, 0))]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    values = [
        base64.b64encode(encode(green)).decode(),  # base64 text
        encode(green, "JPEG", quality=95),
        encode(green, "BMP"),
        encode(green, "WEBP", lossless=True),
        gif.getvalue(),  # first frame is green
        base64.b64encode(encode(green)),  # base64 text as bytes (a v2 BYTES element)
        encode(Image.new("L", (50, 50), 200)),  # grey converts to RGB
    ]
    results = classify(*values)
    assert [max(r, key=r.get) for r in results[:-1]] == ["green"] * (len(values) - 1)
    assert len(results) == len(values)


def test_tensor_rows_are_used_as_given(classify: Any) -> None:
    x = np.zeros((3, 8, 8), dtype=np.float32)
    x[2] = 1.0
    [out] = classify(x.tolist())
    assert max(out, key=out.get) == "blue"
    assert classify(x)[0] == out


def test_imagenet_transform_matches_resize_crop_normalize() -> None:
    image = solid((255, 128, 0), size=(600, 300))  # landscape: shorter side is the height
    array = ImageNetTransform()(image)
    assert array.shape == (3, 224, 224)
    assert array.dtype == np.float32
    expected = (np.array([255, 128, 0], dtype=np.float32) / 255.0 - MEAN) / STD
    np.testing.assert_allclose(array[:, 100, 100], expected, rtol=1e-5)


def test_center_crop_takes_the_middle() -> None:
    image = Image.new("RGB", (256, 512), (0, 0, 0))
    image.paste((255, 255, 255), (0, 144, 256, 368))  # the middle 224 rows are white
    array = ImageNetTransform()(image)
    white = (1.0 - MEAN) / STD
    np.testing.assert_allclose(array[:, 0, 0], white, rtol=1e-4)
    np.testing.assert_allclose(array[:, 223, 223], white, rtol=1e-4)


@pytest.mark.parametrize("text", ["aGVsbG8", "aGVs!!bG8=", "@@@@", " ", "iVBO Rw0K"])
def test_bad_base64_is_400(classify: Any, text: str) -> None:
    with pytest.raises(PredictionException) as info:
        classify(text)
    assert_400(info, "base64")


def test_empty_base64_is_not_an_image(classify: Any) -> None:
    with pytest.raises(PredictionException) as info:
        classify("")
    assert_400(info, "cannot decode image")


@pytest.mark.parametrize(
    "payload",
    [
        b"plain text, not an image",
        bytes(range(256)) * 4,
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,  # valid signature, garbage after
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
    ],
)
def test_non_image_bytes_are_400(classify: Any, payload: bytes) -> None:
    with pytest.raises(PredictionException) as info:
        classify(payload)
    assert_400(info, "cannot decode image")


def test_truncated_png_is_400(classify: Any) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise))
    with pytest.raises(PredictionException) as info:
        classify(data[: len(data) // 2])
    assert_400(info, "cannot decode image")


@pytest.mark.parametrize("fmt", ["TIFF", "PPM", "ICO"])
def test_formats_outside_the_allow_list_are_400(classify: Any, fmt: str) -> None:
    with pytest.raises(PredictionException) as info:
        classify(encode(solid((255, 0, 0)), fmt))
    assert_400(info, "cannot decode image")


def test_decompression_bomb_png_is_400_before_decoding(classify: Any, real_bomb: bytes) -> None:
    assert len(real_bomb) < 1_000_000
    with pytest.raises(PredictionException) as info:
        classify(real_bomb)
    assert info.value.error_code == 400
    assert "pixels" in info.value.message


@pytest.mark.parametrize("side", [10_000, 20_000, 65_535])
def test_bomb_headers_are_refused_without_decoding(side: int) -> None:
    with pytest.raises(PredictionException) as info:
        open_image(grey_png_header(side, side, zlib.compress(b"\x00" * 64)))
    assert info.value.error_code == 400
    assert "pixels" in info.value.message


def test_pixel_cap_is_configurable() -> None:
    data = encode(solid((1, 2, 3), size=(100, 100)))
    assert open_image(data, max_pixels=10_000).size == (100, 100)
    with pytest.raises(PredictionException, match="exceeds the limit of 9999 pixels"):
        open_image(data, max_pixels=9_999)


def test_the_bomb_warning_is_an_error_even_when_warnings_are_ignored() -> None:
    header = grey_png_header(10_000, 10_000, zlib.compress(b"\x00" * 64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(PredictionException):
            open_image(header, max_pixels=None)


def test_image_bytes_decodes_base64_once_and_keeps_raw_images() -> None:
    png = encode(solid((0, 0, 0), size=(2, 2)))
    assert image_bytes(png) == png
    assert image_bytes(base64.b64encode(png)) == png
    assert image_bytes(base64.b64encode(png).decode()) == png
    assert image_bytes(b"not base64 !") == b"not base64 !"


def test_rows_of_different_shapes_are_400(classify: Any) -> None:
    with pytest.raises(PredictionException) as info:
        classify(np.zeros((3, 4, 4)).tolist(), np.zeros((3, 5, 5)).tolist())
    assert_400(info, "differ in shape")


def test_row_without_data_is_400(classify: Any, model_dir: Path) -> None:
    manifest = {"model": {"modelName": "tiny", "serializedFile": "model.pt", "handler": "x"}}
    ctx = Context("tiny", str(model_dir), manifest, 1, None, "0.1.0")
    entry = load_entry_point("image_classifier", model_dir, ctx)
    ctx.begin_batch(["a"], [{}])
    with pytest.raises(PredictionException) as info:
        entry([{"other": 1}], ctx)
    assert_400(info, "no data or body")


def test_topk_can_be_lowered(model_dir: Path) -> None:
    manifest = {"model": {"modelName": "tiny", "serializedFile": "model.pt", "handler": "x"}}
    ctx = Context("tiny", str(model_dir), manifest, 1, None, "0.1.0")
    entry = load_entry_point("ts.torch_handler.image_classifier", model_dir, ctx)
    handler = entry.__self__  # type: ignore[attr-defined]
    handler.set_max_result_classes(1)
    assert handler.get_max_result_classes() == 1
    ctx.begin_batch(["a"], [{}])
    [only] = entry([{"body": encode(solid((0, 255, 0)))}], ctx)
    assert list(only) == ["green"]


def test_label_mapping_formats(tmp_path: Path) -> None:
    path = tmp_path / "index_to_name.json"
    assert load_label_mapping(path) is None
    path.write_text('{"0": ["n01440764", "tench"], "1": "goldfish"}')
    assert load_label_mapping(path) == {"0": "tench", "1": "goldfish"}
    path.write_text('{"object_type_names": ["cat", "dog"]}')
    assert load_label_mapping(path) == {"0": "cat", "1": "dog"}
    path.write_text('["cat", "dog"]')
    with pytest.raises(ValueError, match="json format"):
        load_label_mapping(path)
    path.write_text('{"0": 5}')
    with pytest.raises(ValueError, match="str or List"):
        load_label_mapping(path)


def test_map_class_to_label() -> None:
    probs = [[0.7, 0.2], [0.6, 0.3]]
    assert map_class_to_label(probs, {"3": "cat", "1": "dog"}, [[3, 1], [1, 0]]) == [
        {"cat": 0.7, "dog": 0.2},
        {"dog": 0.6, "0": 0.3},
    ]
    assert map_class_to_label(probs) == [{"0": 0.7, "1": 0.2}, {"0": 0.6, "1": 0.3}]
    with pytest.raises(TypeError):
        map_class_to_label(probs, mapping=["cat"])  # type: ignore[arg-type]
