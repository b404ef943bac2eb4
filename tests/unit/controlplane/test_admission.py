"""Admission: table-driven defaulting and validation with KServe's messages and field paths."""

from __future__ import annotations

from typing import Any

import pytest

from marserve.controlplane.admission import default_isvc, validate_isvc
from marserve.controlplane.errors import Invalid


def isvc(predictor: dict[str, Any], name: str = "torchserve", **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"predictor": predictor},
    }


def test_old_schema_normalised() -> None:
    out = default_isvc(isvc({"pytorch": {"storageUri": "gs://x"}}))
    pred = out["spec"]["predictor"]
    assert "pytorch" not in pred and pred["minReplicas"] == 1
    assert pred["model"] == {"storageUri": "gs://x", "modelFormat": {"name": "pytorch"}}


def test_mode_annotation_normalised() -> None:
    out = default_isvc(isvc({"model": {}}, **{"serving.kserve.io/deploymentMode": "rawdeployment"}))
    assert out["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"


@pytest.mark.parametrize(
    ("obj", "field", "words"),
    [
        (isvc({"model": {}}, name="Bad_Name"), "metadata.name", "lower case"),
        (isvc({"model": {}, "pytorch": {}}), "spec.predictor", "exactly one"),
        (isvc({}), "spec.predictor", "exactly one"),
        (
            isvc({"model": {}, "minReplicas": 3, "maxReplicas": 2}),
            "spec.predictor.minReplicas",
            "greater",
        ),
        (
            isvc({"model": {}, "containerConcurrency": -1}),
            "spec.predictor.containerConcurrency",
            "less than 0",
        ),
        (
            isvc({"model": {}, "containerConcurrency": 1001}),
            "spec.predictor.containerConcurrency",
            "1000",
        ),
        (isvc({"model": {}, "timeout": 601}), "spec.predictor.timeout", "600"),
        (isvc({"model": {}, "scaleMetric": "cpu"}), "spec.predictor.scaleMetric", "Unsupported"),
        (
            isvc({"model": {"ports": [{"containerPort": 8012}]}}),
            "spec.predictor.containers[0].ports[0].containerPort",
            "reserved",
        ),
        (
            isvc({"model": {"env": [{"name": "PORT"}]}}),
            "spec.predictor.containers[0].env[0].name",
            "reserved",
        ),
    ],
)
def test_validation_rejects(obj: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(Invalid) as info:
        validate_isvc(default_isvc(obj))
    assert info.value.field == field and words in info.value.message


def test_valid_passes() -> None:
    validate_isvc(default_isvc(isvc({"pytorch": {"storageUri": "gs://x"}, "maxReplicas": 2})))
