"""``marserve export kserve``'s core: an InferenceService checked, made into cluster manifests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from marserve.controlplane.admission import default_isvc, validate_isvc
from marserve.controlplane.errors import ApiError
from marserve.errors import ConfigError
from marserve.kube.validate import problems

DEPLOYMENT_MODES = ("Knative", "Serverless", "Standard", "RawDeployment")
_KNATIVE = frozenset({"Knative", "Serverless"})
_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
_KPA_PREFIX = "autoscaling.knative.dev/"


@dataclass(frozen=True)
class Export:
    """The manifests to apply, in order, and what the target cluster will not honour."""

    documents: tuple[dict[str, Any], ...]
    warnings: tuple[str, ...]


def packaged(name: str) -> str:
    return resources.files("marserve.kube").joinpath(name).read_text()


def runtime_manifest() -> dict[str, Any]:
    """The kserve-marserve ClusterServingRuntime (deploy/kubernetes/ ships the same file)."""
    doc = yaml.safe_load(packaged("kserve-marserve.clusterservingruntime.yaml"))
    assert isinstance(doc, dict)
    return doc


def check_isvc(doc: object) -> dict[str, Any]:
    """The document as an InferenceService, or a ConfigError naming every problem."""
    if not isinstance(doc, dict):
        raise ConfigError("the file is not a YAML mapping (one InferenceService expected)")
    if (doc.get("apiVersion"), doc.get("kind")) != (
        "serving.kserve.io/v1beta1",
        "InferenceService",
    ):
        raise ConfigError(
            "expected apiVersion serving.kserve.io/v1beta1 and kind InferenceService, got "
            f"{doc.get('apiVersion')!r} / {doc.get('kind')!r}"
        )
    if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
        raise ConfigError("metadata.name is required")
    found = problems(doc, json.loads(packaged("inferenceservice.v1beta1.schema.json")))
    if found:
        raise ConfigError("invalid InferenceService:\n  " + "\n  ".join(found))
    return doc


def admitted(isvc: dict[str, Any]) -> dict[str, Any]:
    """The InferenceService as KServe's webhooks store it: defaulted, then validated."""
    defaulted = default_isvc(isvc)
    try:
        validate_isvc(defaulted)
    except ApiError as err:
        raise ConfigError(f"invalid InferenceService: {err}") from None
    return defaulted


def knative_only(doc: Mapping[str, Any]) -> list[str]:
    """Features the file uses that only Knative mode implements."""
    found = []
    annotations = doc.get("metadata", {}).get("annotations") or {}
    kpa = sorted(k for k in annotations if k.startswith(_KPA_PREFIX))
    if kpa:
        found.append(f"Knative autoscaler annotations ({', '.join(kpa)})")
    for name, component in (doc.get("spec") or {}).items():
        if not isinstance(component, Mapping):
            continue
        if component.get("canaryTrafficPercent") is not None:
            found.append(f"spec.{name}.canaryTrafficPercent (canary rollout)")
        if component.get("containerConcurrency"):
            found.append(f"spec.{name}.containerConcurrency (a limit Knative's queue-proxy keeps)")
        if component.get("minReplicas") == 0:
            found.append(f"spec.{name}.minReplicas: 0 (scale to zero)")
    return found


def export_kserve(doc: object, *, runtime: bool, deployment_mode: str) -> Export:
    """The checked InferenceService (after the runtime when asked) and Knative-only warnings."""
    if deployment_mode not in DEPLOYMENT_MODES:
        raise ConfigError(f"--deployment-mode must be one of {', '.join(DEPLOYMENT_MODES)}")
    isvc = admitted(check_isvc(doc))
    mode = (isvc["metadata"].get("annotations") or {}).get(_MODE_ANNOTATION, deployment_mode)
    warnings: list[str] = []
    if mode not in _KNATIVE:
        warnings = [
            f"{feature} only works in Knative mode; this service deploys in {mode} mode"
            for feature in knative_only(isvc)
        ]
    documents = (runtime_manifest(), isvc) if runtime else (isvc,)
    return Export(documents, tuple(warnings))
