"""Server-side apply: field sets, FieldsV1, ownership, conflicts, force, removal."""

from __future__ import annotations

from typing import Any

import pytest

from marserve.controlplane.errors import Conflict
from marserve.controlplane.managed import (
    from_fields_v1,
    owned_part,
    record_update,
    server_side_apply,
    to_fields_v1,
)

NOW = "2026-01-01T00:00:00Z"


def config(uri: str = "s3://a", **predictor: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "m", "labels": {"team": "ml"}},
        "spec": {"predictor": {"model": {"storageUri": uri}, **predictor}},
    }


def owners(obj: dict[str, Any]) -> dict[str, set[tuple[str, ...]]]:
    return {m["manager"]: from_fields_v1(m["fieldsV1"]) for m in obj["metadata"]["managedFields"]}


FIELD_SETS = [
    ({"spec": {"a": 1, "b": {"c": [1, 2]}}}, {("spec", "a"), ("spec", "b", "c")}),
    ({"status": {"x": 1}, "metadata": {"name": "n", "uid": "u"}}, set()),
    (
        {"metadata": {"labels": {"a": "b"}, "annotations": {"c": "d"}}},
        {("metadata", "labels", "a"), ("metadata", "annotations", "c")},
    ),
    ({"spec": {"empty": {}}}, {("spec", "empty")}),
]


@pytest.mark.parametrize(("obj", "want"), FIELD_SETS)
def test_owned_part_and_fields_v1_round_trip(obj: dict[str, Any], want: set[Any]) -> None:
    assert owned_part(obj) == want
    assert from_fields_v1(to_fields_v1(want)) == want


def test_fields_v1_shape_and_keyed_entries() -> None:
    assert to_fields_v1({("spec", "a"), ("spec", "b")}) == {"f:spec": {"f:a": {}, "f:b": {}}}
    tree = {"f:spec": {".": {}, "f:containers": {'k:{"name":"x"}': {".": {}}}}}
    assert from_fields_v1(tree) == {("spec", "containers")}


def test_first_apply_creates_and_owns() -> None:
    out = server_side_apply(None, config(), "kubectl", force=False, now=NOW)
    assert owners(out) == {"kubectl": owned_part(config())}
    assert out["metadata"]["managedFields"][0]["operation"] == "Apply"


def test_same_value_is_shared_a_different_one_conflicts() -> None:
    current = server_side_apply(None, config(), "a", force=False, now=NOW)
    shared = server_side_apply(current, config(), "b", force=False, now=NOW)
    assert ("spec", "predictor", "model", "storageUri") in owners(shared)["a"]
    assert ("spec", "predictor", "model", "storageUri") in owners(shared)["b"]
    with pytest.raises(Conflict) as err:
        server_side_apply(current, config("s3://b"), "b", force=False, now=NOW)
    assert err.value.code == 409
    assert err.value.causes == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "a" using serving.kserve.io/v1beta1',
            "field": ".spec.predictor.model.storageUri",
        }
    ]
    assert 'Apply failed with 1 conflict: conflict with "a"' in err.value.message


def test_force_takes_ownership() -> None:
    current = server_side_apply(None, config(), "a", force=False, now=NOW)
    forced = server_side_apply(current, config("s3://b"), "b", force=True, now=NOW)
    assert forced["spec"]["predictor"]["model"]["storageUri"] == "s3://b"
    assert ("spec", "predictor", "model", "storageUri") not in owners(forced)["a"]
    assert ("spec", "predictor", "model", "storageUri") in owners(forced)["b"]


def test_fields_a_manager_stops_applying_are_removed_unless_shared() -> None:
    current = server_side_apply(None, config(minReplicas=2), "a", force=False, now=NOW)
    dropped = server_side_apply(current, config(), "a", force=False, now=NOW)
    assert "minReplicas" not in dropped["spec"]["predictor"]
    shared = server_side_apply(current, config(minReplicas=2), "b", force=False, now=NOW)
    kept = server_side_apply(shared, config(), "a", force=False, now=NOW)
    assert kept["spec"]["predictor"]["minReplicas"] == 2


def test_an_update_takes_the_fields_it_changes() -> None:
    applied = server_side_apply(None, config(), "kubectl", force=False, now=NOW)
    edited = {**applied, "spec": {"predictor": {"model": {"storageUri": "s3://edit"}}}}
    out = record_update(applied, edited, "kubectl-edit", now=NOW)
    got = owners(out)
    assert got["kubectl-edit"] == {("spec", "predictor", "model", "storageUri")}
    assert ("spec", "predictor", "model", "storageUri") not in got["kubectl"]
    with pytest.raises(Conflict):
        server_side_apply(out, config(), "kubectl", force=False, now=NOW)


def test_managed_fields_a_client_rewrites_are_kept() -> None:
    applied = server_side_apply(None, config(), "kubectl", force=False, now=NOW)
    sent = {**applied, "metadata": {**applied["metadata"], "managedFields": []}}
    assert record_update(applied, sent, "x", now=NOW)["metadata"]["managedFields"] == []
