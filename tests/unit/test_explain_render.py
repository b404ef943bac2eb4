"""Explanations as pictures and as v2 outputs: PNG negotiation, heatmaps, shapes and dtypes."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from marserve.dataplane import _explain_outputs
from marserve.errors import InvalidInput
from marserve.explain_render import (
    MAX_PICTURE_PIXELS,
    MIN_PICTURE_SIDE,
    heatmap_png,
    input_picture,
    wants_png,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mnist"
RED = np.array([220, 30, 30])
BLUE = np.array([30, 80, 230])


def decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(int)


@pytest.mark.parametrize(
    ("accept", "fmt", "png"),
    [
        (None, None, False),
        ("*/*", None, False),
        ("application/json", None, False),
        ("image/png", None, True),
        ("text/html, image/png;q=0.9", None, True),
        ("image/png", "json", False),
        (None, "png", True),
        ("application/json", "PNG", True),
    ],
)
def test_a_picture_is_asked_for_with_accept_or_format(
    accept: str | None, fmt: str | None, png: bool
) -> None:
    assert wants_png(accept, fmt) is png


def test_an_unknown_format_is_400() -> None:
    with pytest.raises(InvalidInput, match="format must be png or json"):
        wants_png(None, "jpeg")


def test_one_mnist_map_becomes_a_224_pixel_square() -> None:
    attributions = np.zeros((1, 28, 28))
    attributions[0, 3, 4] = 2.0  # strongest positive: pure red
    attributions[0, 10, 10] = -1.0  # half as strong, negative: half blue
    picture = decode(heatmap_png([attributions]))
    assert picture.shape == (MIN_PICTURE_SIDE, MIN_PICTURE_SIDE, 3)  # 28 x 8
    assert picture[3 * 8, 4 * 8].tolist() == RED.tolist()
    grey = np.array([127.5, 127.5, 127.5])  # no input given: a neutral ground
    np.testing.assert_allclose(picture[10 * 8 + 7, 10 * 8 + 7], (grey + BLUE) / 2, atol=1)
    np.testing.assert_allclose(picture[0, 0], grey, atol=1)


def test_a_batch_is_drawn_side_by_side_over_the_input_images() -> None:
    images = [(EXAMPLE / "test_data" / f"{d}.png").read_bytes() for d in (0, 7, 3)]
    maps = [np.zeros((1, 28, 28)) for _ in images]
    for value in maps:
        value[0, 0, 0] = 1.0
    inputs = [{"data": base64.b64encode(images[0]).decode()}, images[1], {"body": images[2]}]
    picture = decode(heatmap_png(maps, inputs))
    assert picture.shape == (224, 3 * 224, 3)
    for index, png in enumerate(images):
        with Image.open(io.BytesIO(png)) as image:
            grey = np.asarray(image.convert("L")).astype(int)
        panel = picture[:, index * 224 : (index + 1) * 224]
        assert panel[0, 0].tolist() == RED.tolist()
        # where the attribution is zero the input shows through, enlarged 8 times
        assert (panel[8::8, 8::8, 0] == grey[1:, 1:]).all()
        assert (panel[8::8, 8::8, 1] == grey[1:, 1:]).all()


def test_tensor_inputs_are_drawn_normalised_and_channels_are_summed() -> None:
    tensor = np.linspace(-1.0, 3.0, 3 * 40 * 50).reshape(3, 40, 50)
    picture = input_picture({"data": tensor.tolist()})
    assert picture is not None and picture.shape == (40, 50)
    assert picture.min() == 0.0 and picture.max() == 1.0
    attributions = np.zeros((3, 40, 50))
    attributions[:, 5, 5] = [1.0, 1.0, -3.0]  # channels sum to -1: blue
    drawn = decode(heatmap_png([attributions], [tensor]))
    assert drawn.shape == (5 * 40, 5 * 50, 3)  # 50 -> 250 >= 224
    assert drawn[5 * 5, 5 * 5].tolist() == BLUE.tolist()


def test_inputs_that_are_no_picture_of_the_maps_size_leave_a_grey_ground() -> None:
    for unusable in ("not base64!", b"\x89PNG broken", {"data": None}, [[1.0, 2.0]], None):
        drawn = decode(heatmap_png([np.zeros((28, 28))], [unusable]))
        assert drawn.shape == (224, 224, 3)
        np.testing.assert_allclose(drawn[100, 100], [127.5] * 3, atol=1)


def test_delta_dicts_are_drawn_by_their_attributions() -> None:
    value = {"attributions": np.ones((1, 28, 28)), "convergence_delta": 0.01}
    assert decode(heatmap_png([value]))[0, 0].tolist() == RED.tolist()


@pytest.mark.parametrize("values", [[], [{"label": "cat"}], [[]], [["a", "b"]]])
def test_what_cannot_be_drawn_is_400(values: list[object]) -> None:
    with pytest.raises(InvalidInput):
        heatmap_png(values)


# v2 outputs -----------------------------------------------------------------------------------
def test_one_row_keeps_its_shape_as_in_the_seeds() -> None:
    [output] = _explain_outputs([np.full((1, 28, 28), 0.5, dtype=np.float32)])
    assert (output.name, output.datatype, output.shape) == ("explain", "FP64", (1, 28, 28))
    assert output.data.dtype == np.float64


def test_n_rows_stack_on_a_leading_axis() -> None:
    rows = [np.full((1, 28, 28), float(i)) for i in range(3)]
    [output] = _explain_outputs(rows)
    assert (output.datatype, output.shape) == ("FP64", (3, 1, 28, 28))
    assert output.data[2, 0, 5, 5] == 2.0


def test_deltas_become_a_second_output() -> None:
    rows = [{"attributions": [[1.0, 2.0]], "convergence_delta": d} for d in (0.1, -0.2)]
    explain, delta = _explain_outputs(rows)
    assert (explain.name, explain.shape) == ("explain", (2, 1, 2))
    assert (delta.name, delta.datatype, delta.shape) == ("convergence_delta", "FP64", (2,))
    assert delta.data.tolist() == [0.1, -0.2]


def test_values_that_are_not_maps_fall_back_to_json_bytes() -> None:
    [output] = _explain_outputs([{"words": ["a"], "importances": [0.3]}])
    assert (output.name, output.datatype) == ("explain", "BYTES")
    [ragged] = _explain_outputs([[1.0, 2.0], [3.0]])
    assert ragged.datatype == "BYTES"
    [text] = _explain_outputs([["0.5", "1.5"]])
    assert text.datatype == "BYTES"


def test_the_front_renders_without_torch_or_captum() -> None:
    code = (
        "import sys, numpy as np\n"
        "import marserve.rest.kserve, marserve.rest.torchserve\n"
        "from marserve.explain_render import heatmap_png\n"
        "heatmap_png([np.ones((1, 28, 28))])\n"
        "print(sorted(m for m in ('torch', 'captum') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_pictures_stay_bounded_however_many_maps_are_asked_for() -> None:
    many = [np.ones((1, 1)) for _ in range(2000)]  # 1x1 maps would want 224x enlargement
    with Image.open(io.BytesIO(heatmap_png(many))) as image:
        width, height = image.size
    assert width * height <= MAX_PICTURE_PIXELS and height == 89  # isqrt(16e6 / 2000)
    with pytest.raises(InvalidInput, match="too much to draw"):
        heatmap_png([np.ones((4000, 4001))])
