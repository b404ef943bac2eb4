"""TorchServe's object_detector, image_segmenter and densenet_handler, without torchvision, on
small models the tests build (eager model files with state dicts, as archives carry them)."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tests.unit.vision_models import CLASSIFIER, DETECTOR, SEGMENTER, model_dir

from marserve.handlers import Context, PredictionException, load_entry_point


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))


def entry(root: Path, handler: str) -> Any:
    manifest = {"model": {"modelName": "tiny", "serializedFile": "model.pt",
                          "modelFile": "model.py", "handler": handler}}  # fmt: skip
    ctx = Context("tiny", str(root), manifest, 4, None, "0.1.0")
    handle = load_entry_point(handler, root, ctx)

    def run(*images: bytes) -> list[Any]:
        ctx.begin_batch([f"r{i}" for i in range(len(images))], [{} for _ in images])
        result: list[Any] = handle([{"data": image} for image in images], ctx)
        return result

    return run


def png(colour: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def test_object_detector_keeps_detections_above_the_threshold(tmp_path: Path) -> None:
    root = model_dir(tmp_path / "det", DETECTOR, '{"1": "whole", "2": "corner"}')
    run = entry(root, "object_detector")
    red, blue = run(png((255, 0, 0)), png((0, 0, 255)))
    assert red == [{"whole": [0.0, 0.0, 8.0, 6.0], "score": pytest.approx(1.0)}]
    assert blue == []  # the whole-image box scores 0, the corner 0.1: both below 0.5
    # images of different sizes go to the model as a list, as torchvision's detectors take them
    small, large = run(png((255, 0, 0), (4, 4)), png((200, 0, 0), (10, 5)))
    assert small[0]["whole"] == [0.0, 0.0, 4.0, 4.0]
    assert large[0]["whole"] == [0.0, 0.0, 10.0, 5.0]
    assert large[0]["score"] == pytest.approx(200 / 255, rel=1e-5)


def test_object_detector_without_labels_names_class_indexes(tmp_path: Path) -> None:
    run = entry(model_dir(tmp_path / "det", DETECTOR, None), "ts.torch_handler.object_detector")
    assert list(run(png((255, 0, 0)))[0][0]) == ["1", "score"]


def test_image_segmenter_answers_the_top_class_of_every_pixel(tmp_path: Path) -> None:
    run = entry(model_dir(tmp_path / "seg", SEGMENTER, None), "image_segmenter")
    half = Image.new("RGB", (300, 300), (0, 255, 0))
    half.paste((255, 0, 0), (0, 0, 150, 300))  # left half red, right half green
    out = io.BytesIO()
    half.save(out, format="PNG")
    (pixels,) = run(out.getvalue())
    array = np.asarray(pixels)
    assert array.shape == (224, 224, 2)  # resized to 256, center-cropped to 224
    assert set(array[:, :100, 0].ravel()) == {1.0} and set(array[:, 124:, 0].ravel()) == {0.0}
    assert float(array[:, :100, 1].min()) > 0.99  # probability of the winning class


def test_densenet_handler_answers_five_one_entry_dicts_per_image(tmp_path: Path) -> None:
    labels = '{"0": ["n0", "red"], "1": ["n1", "green"], "2": ["n2", "blue"], "3": ["n3", "x"]}'
    run = entry(model_dir(tmp_path / "dense", CLASSIFIER, labels), "densenet_handler")
    red, blue = run(png((255, 0, 0), (300, 260)), png((0, 0, 255), (300, 260)))
    assert len(red) == 5 and all(len(entry) == 1 for entry in red)
    assert next(iter(red[0])) == "red" and next(iter(blue[0])) == "blue"
    assert sum(p for entry in red for p in entry.values()) <= 1.0 + 1e-6
    # logits 10, 0, 0, -10, 0, 0: the top five are 0 and the four zeros; 4 and 5 have no label
    assert {label for entry in red for label in entry} == {"red", "green", "blue", "4", "5"}


def test_a_model_answering_the_wrong_shape_is_a_clear_error(tmp_path: Path) -> None:
    run = entry(model_dir(tmp_path / "wrong", CLASSIFIER, None), "object_detector")
    with pytest.raises(PredictionException, match="one dict of boxes, labels and scores"):
        run(png((255, 0, 0)))
    segment = entry(model_dir(tmp_path / "wrong2", DETECTOR, None), "image_segmenter")
    with pytest.raises(PredictionException, match="N x classes x H x W"):
        segment(png((255, 0, 0)))


def test_explanations_are_501_for_detection_and_segmentation(tmp_path: Path) -> None:
    for handler, source in (("object_detector", DETECTOR), ("image_segmenter", SEGMENTER)):
        root = model_dir(tmp_path / handler, source, None)
        manifest = {"model": {"modelName": "t", "serializedFile": "model.pt",
                              "modelFile": "model.py", "handler": handler}}  # fmt: skip
        ctx = Context("t", str(root), manifest, 1, None, "0.1.0")
        handle = load_entry_point(handler, root, ctx)
        ctx.begin_batch(["r0"], [{"explain": "True"}])
        with pytest.raises(PredictionException) as caught:
            handle([{"data": png((255, 0, 0))}], ctx)
        assert caught.value.error_code == 501
