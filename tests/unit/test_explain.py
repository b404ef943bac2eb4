"""marserve.explain: settings, per-row options, and batched integrated gradients against Captum."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from PIL import Image

from marserve.explain import (
    INSTALL_HINT,
    ExplainOptions,
    ExplainSettings,
    RowFailure,
    explain_batch,
    integrated_gradients,
    row_options,
)
from marserve.handlers import PredictionException
from marserve.handlers.loader import import_module_file

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mnist"
DEFAULTS = ExplainSettings()


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    module = import_module_file(EXAMPLE / "mnist.py", "explain_test_mnist_model")
    model = module.Net()
    model.load_state_dict(torch.load(EXAMPLE / "mnist_cnn.pt", weights_only=True))
    return model.eval()


def digits(*which: int) -> torch.Tensor:
    """The example's test PNGs, normalised as its handler does: N x 1 x 28 x 28."""
    planes = []
    for digit in which:
        with Image.open(EXAMPLE / "test_data" / f"{digit}.png") as image:
            pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        planes.append(((pixels - 0.1307) / 0.3081)[np.newaxis])
    return torch.from_numpy(np.stack(planes))


def captum(model: torch.nn.Module, inputs: torch.Tensor, target: Any, **kwargs: Any) -> Any:
    return IntegratedGradients(model).attribute(inputs, target=target, **kwargs)


def assert_close(ours: Any, theirs: Any) -> None:
    """Equal within 1e-6 relative to the map's largest magnitude (float32 sums in any order)."""
    theirs = np.asarray(theirs, dtype=np.float64)
    scale = float(np.abs(theirs).max())
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-6, atol=1e-6 * scale)


# settings ---------------------------------------------------------------------------------------
def test_settings_default_to_50_steps_bounded_by_500() -> None:
    assert ExplainSettings.from_model_yaml(None) == ExplainSettings(50, 500, None)
    assert ExplainSettings.from_model_yaml({"minWorkers": 1}) == DEFAULTS
    assert ExplainSettings.from_model_yaml({"handler": {"other": 1}}) == DEFAULTS


def test_settings_come_from_the_handler_explain_section() -> None:
    config = {"handler": {"explain": {"n_steps": 20, "max_n_steps": 64, "internal_batch_size": 8}}}
    assert ExplainSettings.from_model_yaml(config) == ExplainSettings(20, 64, 8)
    assert ExplainSettings.from_model_yaml({"handler": {"explain": {"max_n_steps": 30}}}) == (
        ExplainSettings(30, 30, None)
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"n_steps": 0}, "n_steps must be a positive integer"),
        ({"n_steps": True}, "n_steps must be a positive integer"),
        ({"n_steps": "50"}, "n_steps must be a positive integer"),
        ({"internal_batch_size": -1}, "internal_batch_size must be a positive integer"),
        ({"n_steps": 80, "max_n_steps": 60}, "exceeds max_n_steps"),
        ({"steps": 10}, "unknown keys ['steps']"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_bad_settings_name_the_key(section: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ExplainSettings.from_model_yaml({"handler": {"explain": section}})


# per-row options -------------------------------------------------------------------------------
def test_rows_without_options_get_the_predicted_class_and_default_steps() -> None:
    assert row_options({"data": "x"}, DEFAULTS) == ExplainOptions(None, 50, False)
    assert row_options([1.0, 2.0], DEFAULTS) == ExplainOptions(None, 50, False)
    assert row_options({"data": "x", "target": None}, DEFAULTS).target is None


def test_options_from_json_and_from_query_bytes_agree() -> None:
    from_json = {"target": 3, "n_steps": 20, "return_delta": True}
    from_query = {"target": b"3", "n_steps": b"20", "return_delta": b"true"}
    from_body = {"body": {"data": "x", "target": 3, "n_steps": 20, "return_delta": "TRUE"}}
    expected = ExplainOptions(3, 20, True)
    assert row_options(from_json, DEFAULTS) == expected
    assert row_options(from_query, DEFAULTS) == expected
    assert row_options(from_body, DEFAULTS) == expected
    assert row_options({"target": np.int64(3), "n_steps": "20", "return_delta": "1"}, DEFAULTS) == (
        expected
    )


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"target": -1}, "target must be >= 0"),
        ({"target": True}, "target must be an integer"),
        ({"target": 1.5}, "target must be an integer"),
        ({"target": "seven"}, "target must be an integer"),
        ({"target": [1]}, "target must be an integer"),
        ({"n_steps": 0}, "n_steps must be between 1 and 500, got 0"),
        ({"n_steps": 501}, "n_steps must be between 1 and 500, got 501"),
        ({"n_steps": b"9" * 40}, "n_steps must be an integer"),
        ({"n_steps": "--5"}, "n_steps must be an integer"),
        ({"target": "\u00b2"}, "target must be an integer"),
        ({"return_delta": "maybe"}, "return_delta must be true or false"),
        ({"return_delta": 1}, "return_delta must be true or false"),
    ],
)
def test_invalid_options_are_value_errors(row: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        row_options(row, DEFAULTS)


def test_the_step_bound_is_the_models() -> None:
    settings = ExplainSettings(n_steps=10, max_n_steps=16)
    assert row_options({}, settings).n_steps == 10
    assert row_options({"n_steps": 16}, settings).n_steps == 16
    with pytest.raises(ValueError, match="between 1 and 16"):
        row_options({"n_steps": 17}, settings)


# integrated gradients ---------------------------------------------------------------------------
def test_one_image_equals_captum_called_directly(net: torch.nn.Module) -> None:
    image = digits(7)
    [value] = explain_batch(net, image, [{"target": 7}], DEFAULTS)
    expected = captum(net, image, 7, n_steps=50)
    assert value.dtype == np.float64 and value.shape == (1, 28, 28)
    assert_close(value, expected[0])
    # the same call Captum gets (50 scaled inputs per pass is one pass here): the same numbers
    np.testing.assert_array_equal(value, expected[0].double().numpy())


def test_a_batch_explains_every_row_with_its_own_predicted_class(net: torch.nn.Module) -> None:
    images = digits(3, 1, 4, 1, 5)
    values = explain_batch(net, images, [{} for _ in range(5)], DEFAULTS)
    assert [v.shape for v in values] == [(1, 28, 28)] * 5
    predicted = net(images).argmax(1).tolist()
    assert predicted == [3, 1, 4, 1, 5]
    expected = captum(net, images, predicted, n_steps=50)
    for value, reference in zip(values, expected, strict=True):
        assert_close(value, reference)
    # and each row alone, as a caller explaining one image at a time would get it
    for index, digit in enumerate((3, 1, 4, 1, 5)):
        alone = captum(net, images[index : index + 1], digit, n_steps=50)
        assert_close(values[index], alone[0])


def test_rows_with_different_steps_targets_and_delta(net: torch.nn.Module) -> None:
    images = digits(0, 2, 6)
    rows = [{"target": 8}, {"n_steps": 12}, {"n_steps": 12, "return_delta": True, "target": 5}]
    first, second, third = explain_batch(net, images, rows, DEFAULTS)
    assert_close(first, captum(net, images[:1], 8, n_steps=50)[0])
    assert_close(second, captum(net, images[1:2], 2, n_steps=12)[0])
    attributions, delta = captum(net, images[2:], 5, n_steps=12, return_convergence_delta=True)
    assert set(third) == {"attributions", "convergence_delta"}
    assert_close(third["attributions"], attributions[0])
    assert third["convergence_delta"] == pytest.approx(float(delta[0]), abs=1e-5)


def test_internal_batch_size_changes_passes_not_results(net: torch.nn.Module) -> None:
    images = digits(9, 4)
    small = ExplainSettings(n_steps=30, internal_batch_size=8)
    values = explain_batch(net, images, [{}, {}], small)
    expected = captum(net, images, [9, 4], n_steps=30)
    for value, reference in zip(values, expected, strict=True):
        assert_close(value, reference)
    calls: list[int] = []
    net.register_forward_hook(lambda _m, inputs, _o: calls.append(inputs[0].shape[0]))
    try:
        explain_batch(net, images, [{"target": 9}, {"target": 4}], small)
    finally:
        net._forward_hooks.clear()
    assert max(calls) <= 8 and sum(calls) == 2 * 30 + 2  # + the forward for the classes


def test_a_bad_row_fails_alone(net: torch.nn.Module) -> None:
    images = digits(1, 2, 3)
    rows = [{"target": 10}, {"n_steps": "many"}, {}]
    first, second, third = explain_batch(net, images, rows, DEFAULTS)
    assert first == RowFailure(400, "target must be below 10 (the model's classes)")
    assert second == RowFailure(400, "n_steps must be an integer, got 'many'")
    assert_close(third, captum(net, images[2:], 3, n_steps=50)[0])


def test_single_output_models_take_no_target() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 1), torch.nn.Flatten(0))
    inputs = torch.arange(8, dtype=torch.float32).reshape(2, 4)
    plain, targeted = explain_batch(model, inputs, [{}, {"target": 0}], DEFAULTS)
    assert_close(plain, captum(model, inputs[:1], None, n_steps=50)[0])
    assert targeted == RowFailure(
        400, "target must not be given: the model has one output per input"
    )


def test_outputs_that_are_not_per_class_scores_are_501() -> None:
    model = torch.nn.Unflatten(1, (2, 2))
    with pytest.raises(PredictionException) as info:
        explain_batch(model, torch.ones(1, 4), [{}], DEFAULTS)
    assert info.value.error_code == 501
    assert "[N] or [N, classes]" in info.value.message


def test_without_captum_explaining_is_501_naming_the_extra(
    net: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # import captum.attr now fails
    with pytest.raises(PredictionException) as info:
        explain_batch(net, digits(1), [{}], DEFAULTS)
    assert info.value.error_code == 501
    assert INSTALL_HINT in info.value.message
    assert "marserve[explain]" in INSTALL_HINT


def test_integrated_gradients_never_asks_captum_for_fewer_rows_than_inputs(
    net: torch.nn.Module,
) -> None:
    images = digits(*range(6))
    # 4 scaled inputs per pass is fewer than the 6 rows: raised to 6 (Captum would warn)
    attributions, delta = integrated_gradients(
        net, images, list(range(6)), n_steps=5, internal_batch_size=4
    )
    assert delta is None
    assert_close(attributions, captum(net, images, list(range(6)), n_steps=5))


def test_known_class_counts_spare_the_forward_pass_when_targets_are_named(
    net: torch.nn.Module,
) -> None:
    image, counts = digits(5), {}
    calls: list[int] = []
    net.register_forward_hook(lambda _m, inputs, _o: calls.append(inputs[0].shape[0]))
    try:
        first = explain_batch(net, image, [{"target": 5}], DEFAULTS, counts)
        assert counts == {(1, 28, 28): 10} and calls == [1, 50]  # classes, then the steps
        calls.clear()
        again = explain_batch(net, image, [{"target": 5}], DEFAULTS, counts)
        assert calls == [50]
        np.testing.assert_array_equal(first[0], again[0])
        assert explain_batch(net, image, [{"target": 10}], DEFAULTS, counts) == [
            RowFailure(400, "target must be below 10 (the model's classes)")
        ]
        calls.clear()
        explain_batch(net, image, [{}], DEFAULTS, counts)  # the predicted class needs the pass
        assert calls == [1, 50]
    finally:
        net._forward_hooks.clear()
