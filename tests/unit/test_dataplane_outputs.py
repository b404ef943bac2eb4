"""How handler values become v2 output tensors and how v2 inputs become handler rows."""

from __future__ import annotations

import numpy as np

from marserve.dataplane import _rows, _tensor_of
from marserve.types import Tensor


def test_integer_predictions_become_an_int64_tensor() -> None:
    tensor = _tensor_of("predict", [3, 1, 4])
    assert tensor.datatype == "INT64"
    assert tensor.shape == (3,)
    assert tensor.data.tolist() == [3, 1, 4]


def test_float_lists_stack_into_a_matrix() -> None:
    tensor = _tensor_of("predict", [[0.1, 0.9], [0.8, 0.2]])
    assert tensor.datatype == "FP64"
    assert tensor.shape == (2, 2)


def test_dicts_become_json_bytes() -> None:
    tensor = _tensor_of("predict", [{"cat": 0.9}, {"dog": 0.7}])
    assert tensor.datatype == "BYTES"
    assert tensor.data.tolist() == [b'{"cat":0.9}', b'{"dog":0.7}']


def test_strings_become_bytes_of_themselves() -> None:
    tensor = _tensor_of("predict", ["fresh", "rotten", "naïve"])
    assert tensor.datatype == "BYTES"
    assert tensor.data.tolist() == [b"fresh", b"rotten", "naïve".encode()]


def test_ragged_lists_become_json_bytes() -> None:
    tensor = _tensor_of("predict", [[1, 2], [3]])
    assert tensor.datatype == "BYTES"
    assert tensor.data.tolist() == [b"[1,2]", b"[3]"]


def test_json_bytes_elements_reach_handlers_as_text_and_binary_ones_as_bytes() -> None:
    elements = np.empty(2, dtype=object)
    elements[:] = [b"aGVsbG8=", b"\x89PNG"]
    from_json = Tensor("input-0", "BYTES", (2,), elements)
    from_binary = Tensor("input-0", "BYTES", (2,), elements, {"binary_data_size": 20})
    assert _rows([from_json]) == ["aGVsbG8=", b"\x89PNG"]  # not UTF-8: stays bytes
    assert _rows([from_binary]) == [b"aGVsbG8=", b"\x89PNG"]


def test_each_numeric_tensor_is_one_row() -> None:
    image = np.zeros((1, 28, 28), dtype=np.float32)
    rows = _rows([Tensor.from_array("a", image), Tensor.from_array("b", image)])
    assert len(rows) == 2
    assert rows[0].shape == (1, 28, 28)
