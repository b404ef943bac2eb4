"""Request checks: shape, nesting, names, and fieldValidation against KServe's CRD schema."""

from __future__ import annotations

from typing import Any

import pytest

from marserve.controlplane.errors import ApiError, BadRequest, Invalid
from marserve.controlplane.validation import (
    check_isvc_schema,
    check_isvc_types,
    check_shape,
    depth,
    field_validation,
)

GV, KIND = "serving.kserve.io/v1beta1", "InferenceService"


def isvc(**predictor: Any) -> dict[str, Any]:
    return {
        "apiVersion": GV,
        "kind": KIND,
        "metadata": {"name": "m"},
        "spec": {"predictor": predictor},
    }


TYPO = isvc(pytorch={"storageUrl": "s3://x"})


def test_strict_names_every_unknown_field() -> None:
    with pytest.raises(Invalid) as err:
        check_isvc_schema(isvc(pytorch={"storageUrl": "s3://x"}, replicas=3), "Strict")
    fields = [c["field"] for c in err.value.causes]
    assert fields == ["spec.predictor.pytorch.storageUrl", "spec.predictor.replicas"]
    assert err.value.code == 422
    assert 'unknown field "spec.predictor.pytorch.storageUrl"' in err.value.message


@pytest.mark.parametrize(
    ("mode", "warnings"),
    [
        ("Warn", ['unknown field "spec.predictor.pytorch.storageUrl"']),
        ("Ignore", []),
    ],
)
def test_warn_and_ignore_prune(mode: str, warnings: list[str]) -> None:
    pruned, got = check_isvc_schema(TYPO, mode)
    assert got == warnings
    assert pruned["spec"]["predictor"]["pytorch"] == {}
    assert "storageUrl" in TYPO["spec"]["predictor"]["pytorch"]  # input untouched


def test_clean_objects_and_metadata_pass() -> None:
    obj = isvc(model={"modelFormat": {"name": "pytorch"}, "storageUri": "s3://x"})
    obj["metadata"]["labels"] = {"a": "b"}
    obj["status"] = {"anything": True}
    assert check_isvc_schema(obj, "Strict") == (obj, [])
    check_isvc_types(obj)


def test_types_are_checked() -> None:
    with pytest.raises(Invalid, match="minReplicas"):
        check_isvc_types(isvc(minReplicas="two", model={"modelFormat": {"name": "pytorch"}}))


SHAPES: list[tuple[Any, type[ApiError], str]] = [
    ([], BadRequest, "must be a InferenceService object"),
    ({"kind": "Pod"}, BadRequest, "do not match"),
    ({"apiVersion": "v1"}, BadRequest, "do not match"),
    ({"metadata": []}, BadRequest, "metadata: must be an object"),
    ({"metadata": {"name": 5}}, Invalid, "must be a string"),
    ({"metadata": {"name": "x" * 254}}, Invalid, "no more than 253"),
]


@pytest.mark.parametrize(("body", "error", "text"), SHAPES)
def test_shapes(body: Any, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        check_shape(body, KIND, GV)


def test_a_good_shape_passes_unchanged() -> None:
    body = {"spec": {"a": [[[[{"b": [[[]]]}]]]], "deep": {"x": {"y": {}}}}, "metadata": {}}
    assert check_shape(body, KIND, GV) is body


def test_depth_and_limits() -> None:
    doc: dict[str, Any] = {}
    for _ in range(100):
        doc = {"a": doc}
    assert depth({"a": [1, {"b": 2}]}) == 4
    assert depth(doc) > 64
    with pytest.raises(BadRequest, match="nested deeper than 64"):
        check_shape({"spec": doc}, KIND, GV)


@pytest.mark.parametrize(
    ("raw", "want"), [(None, "Warn"), ("", "Warn"), ("Strict", "Strict"), ("Ignore", "Ignore")]
)
def test_field_validation_values(raw: str | None, want: str) -> None:
    assert field_validation(raw) == want


def test_field_validation_unknown() -> None:
    with pytest.raises(BadRequest, match='supported values: "Strict", "Warn", "Ignore"'):
        field_validation("strict")
