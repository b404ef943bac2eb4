"""Every manifest under deploy/kubernetes/ against KServe's CRD schemas and Kubernetes' own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from marserve.kube.validate import problems, unknown_fields

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
CRDS = ROOT / "tests" / "data" / "kserve-crd"
SCHEMA_SETS = ("current", "v0.15.0")
SCHEMA_FILE = {
    "InferenceService": "inferenceservice.v1beta1.schema.json",
    "ClusterServingRuntime": "clusterservingruntime.v1alpha1.schema.json",
}
KUBERNETES_VERSION = "1.33.0"  # a schema set inside kubernetes-validate==1.37.0


def schema(kind: str, version: str) -> dict[str, Any]:
    return json.loads((CRDS / version / SCHEMA_FILE[kind]).read_text())


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


MANIFESTS = manifests()
KSERVE = [(p, d) for p, d in MANIFESTS if d["kind"] in SCHEMA_FILE]
CORE = [(p, d) for p, d in MANIFESTS if d["kind"] not in SCHEMA_FILE]


def ids(found: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    return [f"{p.relative_to(DEPLOY)}:{d['kind']}" for p, d in found]


def test_every_kind_shipped_is_one_we_validate() -> None:
    kinds = {doc["kind"] for _, doc in MANIFESTS}
    assert kinds == {"InferenceService", "ClusterServingRuntime", "ConfigMap"}
    assert sum(doc["kind"] == "InferenceService" for _, doc in MANIFESTS) >= 6


@pytest.mark.parametrize("version", SCHEMA_SETS)
@pytest.mark.parametrize(("path", "doc"), KSERVE, ids=ids(KSERVE))
def test_kserve_objects_validate_against_the_crds(
    path: Path, doc: dict[str, Any], version: str
) -> None:
    assert problems(doc, schema(doc["kind"], version)) == []


@pytest.mark.parametrize(("path", "doc"), CORE, ids=ids(CORE))
def test_core_objects_validate_against_kubernetes(path: Path, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_dashboard_configmap_is_the_dashboard() -> None:
    [doc] = yaml.safe_load_all((DEPLOY / "grafana-dashboard.configmap.yaml").read_text())
    shipped = (ROOT / "deploy" / "grafana" / "marserve-dashboard.json").read_text()
    assert doc["data"]["marserve-dashboard.json"] == shipped


def test_the_runtime_outranks_kserve_torchserve_and_keeps_its_contract() -> None:
    [ours] = yaml.safe_load_all((DEPLOY / "kserve-marserve.clusterservingruntime.yaml").read_text())
    upstream_path = DEPLOY / "replace-torchserve" / "kserve-torchserve.clusterservingruntime.yaml"
    [theirs] = yaml.safe_load_all(upstream_path.read_text())
    assert ours["metadata"]["name"] == "kserve-marserve"
    assert ours["metadata"]["annotations"]["serving.kserve.io/server-type"] == "torchserve"
    [fmt] = ours["spec"]["supportedModelFormats"]
    [their_fmt] = theirs["spec"]["supportedModelFormats"]
    assert fmt["autoSelect"] and fmt["priority"] > their_fmt["priority"]
    assert (fmt["name"], fmt["version"]) == (their_fmt["name"], their_fmt["version"])
    assert ours["spec"]["protocolVersions"] == ["v1", "v2", "grpc-v2"]
    [container] = ours["spec"]["containers"]
    [their_container] = theirs["spec"]["containers"]
    assert container["name"] == "kserve-container"
    assert container["args"][:4] == their_container["args"]
    assert "--disable-token-auth" in container["args"]
    security = container["securityContext"]
    assert security["runAsUser"] == 1000 and security["runAsNonRoot"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert ours["spec"]["annotations"]["prometheus.kserve.io/port"] == "8082"


def test_the_overlay_replaces_only_the_image() -> None:
    overlay = yaml.safe_load((DEPLOY / "replace-torchserve" / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["kserve-torchserve.clusterservingruntime.yaml"]
    assert [i["name"] for i in overlay["images"]] == ["kserve-torchserve"]
    [upstream] = yaml.safe_load_all(
        (DEPLOY / "replace-torchserve" / overlay["resources"][0]).read_text()
    )
    assert upstream["spec"]["containers"][0]["image"] == "kserve-torchserve:replace"


def test_every_kustomization_lists_files_that_exist() -> None:
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(kustomization.read_text())["resources"]:
            assert (kustomization.parent / resource).is_file(), (kustomization, resource)


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"spec": {"predictor": {"pytorchh": {}}}}, ["spec.predictor.pytorchh: unknown field"]),
        (
            {"spec": {"predictor": {"model": {"modelFormat": {"nmae": "pytorch"}}}}},
            ["spec.predictor.model.modelFormat.nmae: unknown field"],
        ),
        (
            {"spec": {"predictor": {"containers": [{"name": "a", "imagee": "x"}]}}},
            ["spec.predictor.containers[0].imagee: unknown field"],
        ),
        ({"metadata": {"name": "x", "anything": 1}, "spec": {"predictor": {}}}, []),
        ({"spec": {"predictor": {"nodeSelector": {"any-label": "x"}}}}, []),
    ],
)
def test_the_unknown_field_walk(doc: dict[str, Any], expected: list[str]) -> None:
    assert unknown_fields(doc, schema("InferenceService", "current")) == expected


def test_schema_errors_name_the_field() -> None:
    doc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "x"},
        "spec": {"predictor": {"minReplicas": "one"}},
    }
    [error] = problems(doc, schema("InferenceService", "v0.15.0"))
    assert error.startswith("spec.predictor.minReplicas: 'one' is not of type 'integer'")
