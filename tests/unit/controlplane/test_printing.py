"""kubectl's text output: tabwriter columns, describe labels and blocks, YAML quoting."""

from __future__ import annotations

import pytest
import yaml

from marserve.controlplane.printing import align, describe, smart_label, table_text, to_yaml


@pytest.mark.parametrize(
    ("field", "want"),
    [
        ("storageUri", "Storage Uri"),
        ("apiVersion", "API Version"),
        ("uid", "UID"),
        ("url", "URL"),
        ("minReplicas", "Min Replicas"),
        ("observedGeneration", "Observed Generation"),
        ("canaryTrafficPercent", "Canary Traffic Percent"),
        ("podIP", "Pod IP"),
    ],
)
def test_smart_label(field: str, want: str) -> None:
    assert smart_label(field) == want


def test_align_like_tabwriter() -> None:
    assert align([["NAME", "URL", "AGE"], ["torchserve", "", "5s"]]) == (
        "NAME         URL   AGE\ntorchserve         5s\n"
    )


def test_table_text_wide_and_namespaces() -> None:
    table = {
        "columnDefinitions": [{"name": "Name", "priority": 0}, {"name": "IP", "priority": 1}],
        "rows": [{"cells": ["p", "10.0.0.1"], "object": {"metadata": {"namespace": "ns"}}}],
    }
    assert table_text(table) == "NAME\np\n"
    assert table_text(table, wide=True, namespaces=True) == (
        "NAMESPACE   NAME   IP\nns          p      10.0.0.1\n"
    )


def test_describe_blocks() -> None:
    obj = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "m",
            "namespace": "default",
            "labels": {"b": "2", "a": "1"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "uid": "u",
            "managedFields": [{}],
        },
        "spec": {"predictor": {"minReplicas": 1, "model": {"storageUri": "s3://x"}}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert describe(obj, []) == (
        "Name:         m\n"
        "Namespace:    default\n"
        "Labels:       a=1\n"
        "              b=2\n"
        "Annotations:  <none>\n"
        "API Version:  serving.kserve.io/v1beta1\n"
        "Kind:         InferenceService\n"
        "Metadata:\n"
        "  UID:  u\n"
        "Spec:\n"
        "  Predictor:\n"
        "    Min Replicas:  1\n"
        "    Model:\n"
        "      Storage Uri:  s3://x\n"
        "Status:\n"
        "  Conditions:\n"
        "    Status:  True\n"
        "    Type:    Ready\n"
        "Events:      <none>\n"
    )


def test_yaml_quotes_what_would_change_type() -> None:
    doc = {"a": "6", "b": "2026-01-01T00:00:00Z", "c": "plain", "d": "x\n", "e": "true", "f": ""}
    text = to_yaml(doc)
    assert text == 'a: "6"\nb: "2026-01-01T00:00:00Z"\nc: plain\nd: |\n  x\ne: "true"\nf: ""\n'
    assert yaml.safe_load(text) == doc
