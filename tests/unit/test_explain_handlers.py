"""Explain inside handlers: which path answers, every row explained, TorchServe's contract kept."""

from __future__ import annotations

import base64
import io
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from PIL import Image
from torch import nn

from marserve.handlers import Context, PredictionException, load_entry_point
from marserve.handlers.base_handler import BaseHandler, uses_integrated_gradients
from marserve.handlers.image_classifier import ImageClassifier
from marserve.handlers.vision_handler import VisionHandler

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mnist"
MNIST_MANIFEST = {
    "runtime": "python",
    "model": {
        "modelName": "mnist",
        "modelVersion": "1.0",
        "handler": "mnist_handler.py",
        "modelFile": "mnist.py",
        "serializedFile": "mnist_cnn.pt",
    },
}
EXPLAIN = {"explain": "True"}


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))


def run(entry: Any, ctx: Context, rows: list[Any]) -> list[Any]:
    """One explain batch, as the worker runs it (the explain header on every item)."""
    ctx.begin_batch([f"r{i}" for i in range(len(rows))], [dict(EXPLAIN) for _ in rows])
    out: list[Any] = entry(rows, ctx)
    return out


def png_b64(digit: int) -> str:
    return base64.b64encode((EXAMPLE / "test_data" / f"{digit}.png").read_bytes()).decode()


def assert_close(ours: Any, theirs: Any) -> None:
    theirs = np.asarray(theirs, dtype=np.float64)
    scale = float(np.abs(theirs).max())
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-6, atol=1e-6 * scale)


# which path answers -----------------------------------------------------------------------------
class OwnInsights(ImageClassifier):
    def get_insights(self, tensor_data: Any, raw_data: Any, target: Any = 0) -> list[Any]:
        return []


class OptedOut(VisionHandler):
    explain_with_integrated_gradients = False


class OptedIn(BaseHandler):
    explain_with_integrated_gradients = True

    def get_insights(self, tensor_data: Any, raw_data: Any, target: Any = 0) -> list[Any]:
        return []  # what TorchServe would call; marserve uses integrated gradients


class OwnInsightsBelowOptIn(OptedIn):
    def get_insights(self, tensor_data: Any, raw_data: Any, target: Any = 0) -> list[Any]:
        return []


@pytest.mark.parametrize(
    ("handler", "integrated"),
    [
        (BaseHandler, False),
        (VisionHandler, True),
        (ImageClassifier, True),
        (OwnInsights, False),
        (OptedOut, False),
        (OptedIn, True),
        (OwnInsightsBelowOptIn, False),
    ],
)
def test_the_nearest_class_decides_the_explain_path(handler: type, integrated: bool) -> None:
    assert uses_integrated_gradients(handler) is integrated


# TorchServe-style get_insights -------------------------------------------------------------------
class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class Recording(BaseHandler):
    """A TorchServe handler: get_insights sees one tensor, the row's data and its target."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[list[int], Any, Any]] = []

    def get_insights(self, tensor_data: Any, raw_data: Any, target: Any) -> list[Any]:
        self.calls.append((list(tensor_data.shape), raw_data, target))
        return [{"explained": raw_data, "target": target}]


def linear_context(tmp_path: Path) -> Context:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
        torch.jit.save(torch.jit.script(Linear()), str(tmp_path / "model.pt"))
    manifest = {"model": {"modelName": "m", "serializedFile": "model.pt"}}
    return Context("m", str(tmp_path), manifest, 4, None, "0.1.0")


def test_torchserve_get_insights_is_called_once_per_row(tmp_path: Path) -> None:
    ctx = linear_context(tmp_path)
    handler = Recording()
    handler.initialize(ctx)
    rows = [{"data": [1.0, 2.0, 3.0], "target": 1}, {"body": [0.0, 1.0, 0.0]}, {"data": [3, 2, 1]}]
    out = run(handler.handle, ctx, rows)
    assert handler.calls == [
        ([1, 3], [1.0, 2.0, 3.0], 1),
        ([1, 3], [0.0, 1.0, 0.0], 0),  # TorchServe's default target
        ([1, 3], [3, 2, 1], 0),
    ]
    assert out == [
        {"explained": [1.0, 2.0, 3.0], "target": 1},
        {"explained": [0.0, 1.0, 0.0], "target": 0},
        {"explained": [3, 2, 1], "target": 0},
    ]


def test_a_batch_that_is_not_one_tensor_gets_torchserves_single_call(tmp_path: Path) -> None:
    class DictInputs(Recording):
        def preprocess(self, data: Any) -> Any:
            return {"rows": len(data)}

        def get_insights(self, tensor_data: Any, raw_data: Any, target: Any) -> list[Any]:
            return [tensor_data, raw_data, target]

    ctx = linear_context(tmp_path)
    handler = DictInputs()
    handler.initialize(ctx)
    out = run(handler.handle, ctx, [{"data": "a", "target": 2}, {"data": "b"}, {"data": "c"}])
    assert out == [{"rows": 3}, "a", 2]


def test_a_torchserve_vision_subclass_can_use_self_ig(tmp_path: Path) -> None:
    class TorchServeMnist(ImageClassifier):  # the shape of TorchServe's own MNIST handler
        def get_insights(self, tensor_data: Any, _: Any, target: Any = 0) -> list[Any]:
            result: list[Any] = self.ig.attribute(tensor_data, target=target, n_steps=15).tolist()
            return result

    ctx = linear_context(tmp_path)
    handler = TorchServeMnist()
    handler.initialize(ctx)
    rows = [{"data": [1.0, 2.0, 3.0], "target": 1}, {"data": [4.0, 0.0, 1.0]}]
    out = run(handler.handle, ctx, rows)
    weights = handler.model.fc.weight.detach().double().numpy()
    # a linear model's integrated gradients from zero are input x weight of the target class
    assert_close(out[0], [1.0, 2.0, 3.0] * weights[1])
    assert_close(out[1], [4.0, 0.0, 1.0] * weights[0])


def test_a_handler_with_its_own_explain_handle_keeps_it(tmp_path: Path) -> None:
    class OwnExplainHandle(ImageClassifier):
        def explain_handle(self, data_preprocess: Any, raw_data: Any) -> list[Any]:
            return [f"mine: {row['data']}" for row in raw_data]

    ctx = linear_context(tmp_path)
    handler = OwnExplainHandle()
    handler.initialize(ctx)
    rows = [{"data": [1.0, 2.0, 3.0]}, {"data": [0.0, 0.0, 1.0]}]
    assert run(handler.handle, ctx, rows) == ["mine: [1.0, 2.0, 3.0]", "mine: [0.0, 0.0, 1.0]"]
    ctx.begin_batch(["p"], [{}])  # and predictions are untouched
    [prediction] = handler.handle(rows[:1], ctx)
    assert set(prediction) == {"0", "1"}  # top classes with their probabilities


# the built-in image classifier -----------------------------------------------------------------
class ChannelMeans(nn.Module):
    """Logits = 10 x the mean of each normalised colour channel: a red image scores class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) * 10.0


def colour_png(rgb: tuple[int, int, int], size: tuple[int, int] = (300, 260)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, rgb).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def classifier(tmp_path: Path) -> tuple[Any, Context]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(ChannelMeans()), str(tmp_path / "model.pt"))
    manifest = {"model": {"modelName": "tiny", "serializedFile": "model.pt", "handler": "x"}}
    config = {"handler": {"explain": {"n_steps": 4}}}
    ctx = Context("tiny", str(tmp_path), manifest, 4, None, "0.1.0", model_yaml_config=config)
    return load_entry_point("image_classifier", tmp_path, ctx), ctx


def test_image_classifier_explains_every_image_of_a_batch(classifier: tuple[Any, Context]) -> None:
    entry, ctx = classifier
    red, blue = colour_png((250, 10, 10)), colour_png((10, 10, 250))
    out = run(entry, ctx, [{"data": red}, {"data": blue}, {"data": red, "target": 1}])
    assert [value.shape for value in out] == [(3, 224, 224)] * 3
    handler = entry.__self__
    inputs = handler.preprocess([{"data": red}, {"data": blue}, {"data": red}])
    expected = IntegratedGradients(handler.model).attribute(inputs, target=[0, 2, 1], n_steps=4)
    for value, reference in zip(out, expected, strict=True):
        assert_close(value, reference)
    # linear model: only the explained channel carries attributions, input x 10 / pixels
    first = np.asarray(out[0])
    assert np.abs(first[1:]).max() == 0.0
    assert_close(first[0], inputs[0, 0].double().numpy() * 10.0 / (224 * 224))


def test_vision_get_insights_keeps_torchserves_signature(classifier: tuple[Any, Context]) -> None:
    handler = classifier[0].__self__
    inputs = handler.preprocess([{"data": colour_png((0, 200, 0))}])
    lists = handler.get_insights(inputs, None, 1)
    assert isinstance(lists, list) and np.asarray(lists).shape == (1, 3, 224, 224)
    assert_close(lists, IntegratedGradients(handler.model).attribute(inputs, target=1, n_steps=4))


def test_bad_explain_settings_in_model_config_are_500(tmp_path: Path) -> None:
    ctx = linear_context(tmp_path)
    ctx.model_yaml_config = {"handler": {"explain": {"n_steps": "fifty"}}}
    entry = load_entry_point("image_classifier", tmp_path, ctx)
    with pytest.raises(PredictionException) as info:
        run(entry, ctx, [{"data": [[1.0, 2.0, 3.0]]}])
    assert info.value.error_code == 500
    assert "model-config.yaml: handler.explain.n_steps must be a positive integer" in str(
        info.value
    )


# the MNIST example -----------------------------------------------------------------------------
@pytest.fixture
def mnist() -> tuple[Any, Context]:
    config = {"handler": {"explain": {"n_steps": 7, "max_n_steps": 20}}}
    ctx = Context("mnist", str(EXAMPLE), MNIST_MANIFEST, 4, None, "0.1.0", model_yaml_config=config)
    return load_entry_point("mnist_handler.py", EXAMPLE, ctx), ctx


def test_mnist_example_explains_each_row_with_model_settings(mnist: tuple[Any, Context]) -> None:
    entry, ctx = mnist
    rows = [{"data": png_b64(4)}, {"data": png_b64(9), "target": 3, "n_steps": 20}]
    out = run(entry, ctx, rows)
    handler = entry.__self__
    inputs = handler.preprocess(rows)
    explainer = IntegratedGradients(handler.model)
    assert_close(out[0], explainer.attribute(inputs[:1], target=4, n_steps=7)[0])
    assert_close(out[1], explainer.attribute(inputs[1:], target=3, n_steps=20)[0])


def test_mnist_rows_with_bad_options_fail_alone(mnist: tuple[Any, Context]) -> None:
    entry, ctx = mnist
    rows = [
        {"data": png_b64(1), "n_steps": 21},
        {"data": png_b64(2)},
        {"data": png_b64(3), "target": 10},
    ]
    out = run(entry, ctx, rows)
    assert ctx.get_response_status(0) == (400, "n_steps must be between 1 and 20, got 21")
    assert ctx.get_response_status(1) == (200, None)
    assert ctx.get_response_status(2) == (400, "target must be below 10 (the model's classes)")
    assert out[0] == {"error": "n_steps must be between 1 and 20, got 21"}
    assert np.asarray(out[1]).shape == (1, 28, 28)


def test_mnist_get_insights_is_torchserves_explain_path(mnist: tuple[Any, Context]) -> None:
    entry, _ = mnist
    handler = entry.__self__
    inputs = handler.preprocess([{"data": png_b64(6)}, {"data": png_b64(8)}])
    lists = handler.get_insights(inputs, None, 6)
    expected = IntegratedGradients(handler.model).attribute(inputs, target=6, n_steps=50)
    assert_close(lists, expected)
