"""KServe's InferenceService admission, pure: webhook defaulting and validation."""

from __future__ import annotations

import copy
import re
from typing import Any

from marserve.controlplane.errors import Invalid

Obj = dict[str, Any]

DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
MODES = {"serverless": "Serverless", "rawdeployment": "RawDeployment", "modelmesh": "ModelMesh"}
FRAMEWORKS = (
    "pytorch",
    "tensorflow",
    "sklearn",
    "xgboost",
    "onnx",
    "triton",
    "lightgbm",
    "paddle",
    "pmml",
    "huggingface",
    "model",
)
COMPONENTS = ("predictor", "transformer", "explainer")
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
SCALE_METRICS = {
    "Serverless": ("concurrency", "rps"),
    "RawDeployment": ("cpu", "memory"),
}
RESERVED_PORTS = {8012, 8022, 9090, 9091, 8013}
RESERVED_ENV = {"K_SERVICE", "K_CONFIGURATION", "K_REVISION", "PORT"}
MAX_CONCURRENCY = 1000
MAX_TIMEOUT = 600


def default_isvc(obj: Obj) -> Obj:
    """A copy of ``obj`` defaulted as KServe's mutating webhook does."""
    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    annotations = meta.get("annotations") or {}
    mode = annotations.get(DEPLOYMENT_MODE)
    if isinstance(mode, str) and mode.lower() in MODES:
        meta["annotations"] = {**annotations, DEPLOYMENT_MODE: MODES[mode.lower()]}
    spec = out.setdefault("spec", {})
    for component in COMPONENTS:
        comp = spec.get(component)
        if not isinstance(comp, dict):
            continue
        if comp.get("minReplicas") is None:
            comp["minReplicas"] = 1
        if component == "predictor":
            _normalise_predictor(comp)
    return out


def _normalise_predictor(pred: Obj) -> None:
    """Move an old-schema framework block (``pytorch:``) into ``model:`` + ``modelFormat``."""
    for framework in FRAMEWORKS[:-1]:
        block = pred.get(framework)
        if isinstance(block, dict) and "model" not in pred:
            model = pred.pop(framework)
            model.setdefault("modelFormat", {"name": framework})
            pred["model"] = model
            return
    model = pred.get("model")
    if isinstance(model, dict) and model.get("protocolVersion") is None:
        model["protocolVersion"] = "v1"


def validate_isvc(obj: Obj, old: Obj | None = None) -> None:
    """Raise :class:`Invalid` naming the field and KServe's message of the first broken rule."""
    name = obj.get("metadata", {}).get("name", "")
    if isinstance(name, str) and len(name) > 63:
        raise Invalid(
            f'The InferenceService "{name}" is invalid: metadata.name: Invalid value: "{name}": '
            "must be no more than 63 characters",
            field="metadata.name",
        )
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise Invalid(
            f'The InferenceService "{name}" is invalid: a InferenceService name must consist of '
            "lower case alphanumeric characters or '-', and must start with alphabetical "
            "character. "
            '(e.g. "my-name" or "abc-123", regex used for validation is '
            "'[a-z]([-a-z0-9]*[a-z0-9])?')",
            field="metadata.name",
        )
    spec = obj.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("predictor"), dict):
        raise Invalid("spec.predictor: Required value", field="spec.predictor")
    annotations = obj.get("metadata", {}).get("annotations") or {}
    mode = annotations.get(DEPLOYMENT_MODE, "Serverless")
    for component in COMPONENTS:
        comp = spec.get(component)
        if isinstance(comp, dict):
            _validate_component(comp, f"spec.{component}", str(mode))
    _validate_predictor(spec["predictor"])


def _validate_predictor(pred: Obj) -> None:
    found = [k for k in FRAMEWORKS if isinstance(pred.get(k), dict)]
    found += ["containers"] if pred.get("containers") else []
    if len(found) != 1:
        raise Invalid(
            "exactly one PredictorSpec implementation must be specified", field="spec.predictor"
        )


def _validate_component(comp: Obj, path: str, mode: str) -> None:
    lo, hi = comp.get("minReplicas"), comp.get("maxReplicas")
    if isinstance(lo, int) and lo < 0:
        raise Invalid("MinReplicas cannot be less than 0", field=f"{path}.minReplicas")
    if isinstance(hi, int) and hi < 0:
        raise Invalid("MaxReplicas cannot be less than 0", field=f"{path}.maxReplicas")
    if isinstance(lo, int) and isinstance(hi, int) and hi != 0 and lo > hi:
        raise Invalid("MinReplicas cannot be greater than MaxReplicas", field=f"{path}.minReplicas")
    cc = comp.get("containerConcurrency")
    if isinstance(cc, int) and cc < 0:
        raise Invalid(
            "ContainerConcurrency cannot be less than 0", field=f"{path}.containerConcurrency"
        )
    if isinstance(cc, int) and mode == "Serverless" and cc > MAX_CONCURRENCY:
        raise Invalid(
            f"expected 0 <= {cc} <= {MAX_CONCURRENCY}: spec.containerConcurrency",
            field=f"{path}.containerConcurrency",
        )
    timeout = comp.get("timeout")
    if isinstance(timeout, int) and (timeout < 0 or timeout > MAX_TIMEOUT):
        raise Invalid(
            f"expected 0 <= {timeout} <= {MAX_TIMEOUT}: timeoutSeconds", field=f"{path}.timeout"
        )
    metric = comp.get("scaleMetric")
    allowed = SCALE_METRICS.get(mode)
    if metric is not None and allowed is not None and metric not in allowed:
        raise Invalid(
            f'spec.{path.split(".")[-1]}.scaleMetric: Unsupported value: "{metric}": supported '
            f"values: {', '.join(repr(a) for a in allowed)}",
            field=f"{path}.scaleMetric",
        )
    for i, container in enumerate(_containers(comp)):
        _validate_container(container, f"{path}.containers[{i}]")


def _containers(comp: Obj) -> list[Obj]:
    out = [c for c in comp.get("containers") or [] if isinstance(c, dict)]
    for key in FRAMEWORKS:
        if isinstance(comp.get(key), dict):
            out.append(comp[key])
    return out


def _validate_container(container: Obj, path: str) -> None:
    for j, port in enumerate(container.get("ports") or []):
        if isinstance(port, dict) and port.get("containerPort") in RESERVED_PORTS:
            raise Invalid(
                f"{port['containerPort']} is a reserved port",
                field=f"{path}.ports[{j}].containerPort",
            )
    for j, env in enumerate(container.get("env") or []):
        if isinstance(env, dict) and env.get("name") in RESERVED_ENV:
            raise Invalid(
                f"{env['name']} is a reserved environment variable", field=f"{path}.env[{j}].name"
            )
