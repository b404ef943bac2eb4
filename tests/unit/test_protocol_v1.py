"""KServe v1 codec: the seeds' mnist request, malformed bodies, predictions/explanations out."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import orjson
import pytest

from marserve.errors import InternalError, InvalidInput
from marserve.protocol import DecodeLimits
from marserve.protocol.v1 import decode_predict_request, encode_explanations, encode_predictions

REQUESTS = Path(__file__).resolve().parents[1] / "data" / "requests"
LIMITS = DecodeLimits()


def decode(body: bytes) -> list[object]:
    return decode_predict_request(body, limits=LIMITS)


def test_seed_mnist_request_yields_its_instance_unchanged() -> None:
    body = (REQUESTS / "mnist.json").read_bytes()
    [instance] = decode(body)
    assert isinstance(instance, dict) and instance["target"] == 0
    png = base64.b64decode(instance["data"], validate=True)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_inputs_is_accepted_like_instances() -> None:
    assert decode(b'{"inputs": [[1, 2], [3, 4]]}') == [[1, 2], [3, 4]]
    assert decode(b'{"instances": [], "parameters": {"a": 1}}') == []


BAD_BODIES = [
    ("A1 truncated", b'{"instances": [', "Unrecognized request format"),
    ("A1 trailing", b'{"instances": []} []', "Unrecognized request format"),
    ("A1 bom", b'\xef\xbb\xbf{"instances": []}', "Unrecognized request format"),
    ("A1 empty", b"", "Unrecognized request format"),
    ("A2 array", b"[1, 2]", "Expected a JSON object"),
    ("A2 string", b'"instances"', "Expected a JSON object"),
    ("A2 null", b"null", "Expected a JSON object"),
    ("A3 missing", b'{"data": [1]}', 'missing required field "instances"'),
    ("A3 not a list", b'{"instances": {"data": 1}}', 'Expected "instances" to be a list'),
    ("A3 inputs not a list", b'{"inputs": "x"}', 'Expected "inputs" to be a list'),
    ("both fields", b'{"instances": [], "inputs": []}', 'only one of "instances" and "inputs"'),
    ("A9 depth", b'{"instances": ' + b"[" * 150 + b"]" * 150 + b"}", "nesting depth exceeds"),
    ("A10 duplicate", b'{"instances": [1], "instances": [2]}', "duplicate key 'instances'"),
    ("A10 nested dup", b'{"instances": [{"data": 1, "data": 2}]}', "duplicate key 'data'"),
    ("A11 NaN", b'{"instances": [NaN]}', "Unrecognized request format"),
    ("A12 bad utf-8", b'{"instances": ["\xc3\x28"]}', "Unrecognized request format"),
]


@pytest.mark.parametrize(
    ("body", "message"), [case[1:] for case in BAD_BODIES], ids=[case[0] for case in BAD_BODIES]
)
def test_bad_bodies_are_400_naming_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode(body)
    assert message in caught.value.message


def test_hidden_duplicate_after_a_scalar_is_found() -> None:
    with pytest.raises(InvalidInput, match="duplicate key 'a'"):
        decode(b'{"instances": [1, {"a": 1, "a": 2}]}')


def test_colons_in_strings_are_not_duplicates() -> None:
    assert decode(b'{"instances": [{"text": "a: b: c"}]}') == [{"text": "a: b: c"}]


def test_encode_predictions_handles_numpy_and_non_finite() -> None:
    values = [np.int64(2), np.array([0.5, np.nan], dtype=np.float32), float("inf"), [1, None]]
    body = encode_predictions(values)
    assert orjson.loads(body) == {"predictions": [2, [0.5, None], None, [1, None]]}


def test_encode_predictions_converts_tensor_like_objects() -> None:
    class TensorLike:
        def tolist(self) -> list[int]:
            return [7, 8]

    non_contiguous = np.arange(6, dtype=np.int32).reshape(2, 3)[:, ::2]
    body = encode_predictions([TensorLike(), non_contiguous, b"text", b"\xff"])
    assert orjson.loads(body)["predictions"] == [[7, 8], [[0, 2], [3, 5]], "text", "/w=="]


def test_unserializable_predictions_are_internal_errors() -> None:
    with pytest.raises(InternalError, match="not JSON serializable"):
        encode_predictions([{1, 2}])


def test_encode_explanations() -> None:
    attributions = np.zeros((1, 2, 2))
    assert orjson.loads(encode_explanations([attributions])) == {
        "explanations": [[[[0.0, 0.0], [0.0, 0.0]]]]
    }
