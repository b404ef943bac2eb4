"""``marserve export kserve`` on the seeds' InferenceServices, against golden outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from marserve.cli.main import cli
from marserve.kube.validate import problems

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "deploy" / "kubernetes" / "samples").glob("*.yaml"))
GOLDEN = ROOT / "tests" / "data" / "export"
CRDS = ROOT / "tests" / "data" / "kserve-crd"
SCHEMA_FILE = {
    "InferenceService": "inferenceservice.v1beta1.schema.json",
    "ClusterServingRuntime": "clusterservingruntime.v1alpha1.schema.json",
}
CASES = [("knative", []), ("standard-runtime", ["--runtime", "--deployment-mode", "Standard"])]


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["export", "kserve", *args])


@pytest.mark.parametrize(("case", "flags"), CASES, ids=[c for c, _ in CASES])
@pytest.mark.parametrize("sample", SAMPLES, ids=[s.stem for s in SAMPLES])
def test_export_matches_the_golden_output(sample: Path, case: str, flags: list[str]) -> None:
    result = run("-f", str(sample), *flags)
    assert result.exit_code == 0, result.output
    assert result.stdout == (GOLDEN / f"{sample.stem}.{case}.yaml").read_text()
    assert result.stderr == (GOLDEN / f"{sample.stem}.{case}.warnings").read_text()


@pytest.mark.parametrize("version", ["current", "v0.15.0"])
@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_exported_document_validates(golden: Path, version: str) -> None:
    for doc in yaml.safe_load_all(golden.read_text()):
        schema = json.loads((CRDS / version / SCHEMA_FILE[doc["kind"]]).read_text())
        assert problems(doc, schema) == []


@pytest.mark.parametrize(
    ("sample", "warned"),
    [
        ("torchserve-canary", ["canaryTrafficPercent"]),
        (
            "torchserve-autoscaling",
            ["autoscaling.knative.dev/class", "containerConcurrency", "minReplicas: 0"],
        ),
        ("torchserve", []),
        ("torchserve-gpu", []),
    ],
)
def test_knative_only_features_warn_in_standard_mode_only(sample: str, warned: list[str]) -> None:
    path = str(ROOT / "deploy" / "kubernetes" / "samples" / f"{sample}.yaml")
    standard = run("-f", path, "--deployment-mode", "Standard").stderr
    assert [w for w in warned if w not in standard] == []
    assert standard.count("warning:") == len(warned)
    assert run("-f", path, "--deployment-mode", "Knative").stderr == ""


def test_the_packaged_runtime_is_the_shipped_one() -> None:
    shipped = ROOT / "deploy" / "kubernetes" / "kserve-marserve.clusterservingruntime.yaml"
    packaged = ROOT / "src" / "marserve" / "kube" / "kserve-marserve.clusterservingruntime.yaml"
    assert packaged.read_text() == shipped.read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Pod\napiVersion: v1\n", "expected apiVersion serving.kserve.io/v1beta1"),
        ("- a\n", "not a YAML mapping"),
        (
            "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nspec: {}\n",
            "metadata.name is required",
        ),
        (
            "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: x}\n"
            "spec: {predictor: {pytorchh: {}}}\n",
            "spec.predictor.pytorchh: unknown field",
        ),
        (
            "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: x}\n"
            "spec: {predictor: {minReplicas: one}}\n",
            "spec.predictor.minReplicas: 'one' is not",
        ),
        ("a: [\n", "cannot read"),
        ("---\na: 1\n---\nb: 2\n", "expected one InferenceService, found 2"),
    ],
)
def test_bad_files_get_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "isvc.yaml"
    path.write_text(text)
    result = run("-f", str(path))
    assert result.exit_code == 1
    assert message in result.stderr


def test_an_unknown_deployment_mode_is_refused() -> None:
    result = run("-f", str(SAMPLES[0]), "--deployment-mode", "Fast")
    assert result.exit_code == 1 and "--deployment-mode must be one of" in result.stderr
