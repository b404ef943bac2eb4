"""Model signature: declared inputs/outputs win; otherwise the ones a prediction used."""

from __future__ import annotations

import numpy as np

from marserve.signature import DEFAULT_INPUTS, Signature, declared
from marserve.types import Tensor


def _tensor(name: str, array: np.ndarray) -> Tensor:
    return Tensor.from_array(name, array)


def test_declared_inputs_and_outputs_come_from_model_config_yaml() -> None:
    yaml_config = {
        "inputs": [{"name": "image", "datatype": "fp32", "shape": [-1, 1, 28, 28]}],
        "outputs": [{"name": "digit", "datatype": "INT64", "shape": [-1]}],
    }
    signature = Signature(yaml_config)
    signature.observe([_tensor("x", np.zeros((2, 3)))], [_tensor("y", np.zeros(2))])
    assert signature.inputs == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert signature.outputs == [{"name": "digit", "datatype": "INT64", "shape": [-1]}]


def test_malformed_declarations_are_ignored() -> None:
    for bad in (
        "image",
        [{"name": "x", "datatype": "FLOAT", "shape": [1]}],
        [{"name": "x", "datatype": "FP32", "shape": [-2]}],
        [{"name": 3, "datatype": "FP32", "shape": [1]}],
        [{"name": "x", "datatype": "FP32", "shape": "1"}],
    ):
        assert declared({"inputs": bad}, "inputs") is None


def test_without_declarations_the_latest_prediction_is_reported_with_a_batch_dimension() -> None:
    signature = Signature({})
    assert signature.inputs == list(DEFAULT_INPUTS)
    assert signature.outputs == []
    signature.observe(
        [_tensor("input-0", np.zeros((1, 28, 28), dtype=np.float32))],
        [_tensor("predict", np.asarray([7], dtype=np.int64))],
    )
    assert signature.inputs == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 28, 28]}]
    assert signature.outputs == [{"name": "predict", "datatype": "INT64", "shape": [-1]}]
