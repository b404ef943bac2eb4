"""Label selectors: every operator Kubernetes has, and clear errors for malformed ones."""

from __future__ import annotations

import pytest

from marserve.controlplane.errors import BadRequest
from marserve.controlplane.selectors import fields_match, matches, parse, parse_fields

LABELS = {"app": "torchserve", "tier": "gpu", "team": "ml"}
CASES = [
    ("", True),
    ("app=torchserve", True),
    ("app==torchserve", True),
    ("app=other", False),
    ("app!=other", True),
    ("app!=torchserve", False),
    ("missing!=x", True),
    ("tier in (gpu,cpu)", True),
    ("tier in (cpu)", False),
    ("tier notin (cpu, tpu)", True),
    ("tier notin (gpu)", False),
    ("missing notin (gpu)", True),
    ("team", True),
    ("missing", False),
    ("!missing", True),
    ("!team", False),
    ("app=torchserve,tier in (gpu),!missing", True),
    ("app=torchserve, team=ops", False),
    ("example.com/key=x", False),
]


@pytest.mark.parametrize(("selector", "want"), CASES)
def test_matches(selector: str, want: bool) -> None:
    assert matches(parse(selector), LABELS) is want


@pytest.mark.parametrize("bad", ["a in (b", "=x", "a b", "!a in (x)", "a=b=c", "-bad=x"])
def test_malformed(bad: str) -> None:
    with pytest.raises(BadRequest, match="unable to parse requirement"):
        parse(bad)


POD = {
    "metadata": {"name": "p", "namespace": "kserve-test"},
    "status": {"phase": "Running"},
    "involvedObject": {"uid": "u1"},
}
FIELD_CASES = [
    ("", True),
    ("metadata.name=p", True),
    ("metadata.name==p", True),
    ("metadata.name!=p", False),
    ("status.phase=Running,metadata.namespace=kserve-test", True),
    ("status.phase=Pending", False),
    ("spec.nodeName=", True),
    ("involvedObject.uid=u1", True),
]


@pytest.mark.parametrize(("selector", "want"), FIELD_CASES)
def test_field_selectors(selector: str, want: bool) -> None:
    assert fields_match(parse_fields(selector), POD) is want


@pytest.mark.parametrize("bad", ["metadata.name", "=x"])
def test_malformed_field_selectors(bad: str) -> None:
    with pytest.raises(BadRequest, match="invalid selector"):
        parse_fields(bad)
