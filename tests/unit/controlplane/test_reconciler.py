"""The pure reconciler: revisions, replicas, canary, conditions and modelStatus, by table."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from marserve.controlplane.admission import default_isvc
from marserve.controlplane.reconciler import (
    CreateRevision,
    Failure,
    Observed,
    Plan,
    ReplicaView,
    RevisionView,
    ScaleRevision,
    reconcile,
)
from marserve.controlplane.revisions import template_hash

Obj = dict[str, Any]
NOW = "2026-12-02T12:00:00Z"
BOOM = Failure("Error", 1, "RuntimeError: initialize failed", NOW)


def isvc(uri: str = "gs://b/v1", **pred: Any) -> Obj:
    obj = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "torchserve", "namespace": "kserve-test", "generation": 1},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "pytorch"}, "storageUri": uri}}},
    }
    obj["spec"]["predictor"].update(pred)
    return default_isvc(obj)


def rev(n: int, obj: Obj, *, ready: bool = True, **kw: Any) -> RevisionView:
    replicas = kw.pop("replicas", (ReplicaView(f"pod-{n}", ready=ready),))
    return RevisionView(f"torchserve-predictor-{n:05d}", template_hash(obj), "ready",
                        replicas=replicas, **kw)  # fmt: skip


def run(obj: Obj, *revs: RevisionView, status: Obj | None = None, gpus: int = 0) -> Plan:
    obj = copy.deepcopy(obj)
    if status is not None:
        obj["status"] = status
    return reconcile(obj, Observed(tuple(revs), "example.com", NOW, gpus))


def cond(plan: Plan, kind: str) -> Obj:
    found: Obj = next(c for c in plan.status["conditions"] if c["type"] == kind)
    return found


def predictor(plan: Plan) -> Obj:
    out: Obj = plan.status["components"]["predictor"]
    return out


def test_first_reconcile_creates_revision_one_and_scales_it() -> None:
    plan = run(isvc())
    assert plan.actions == (
        CreateRevision("torchserve-predictor-00001", 1, template_hash(isvc())),
        ScaleRevision("torchserve-predictor-00001", 1),
    )
    assert predictor(plan)["latestCreatedRevision"] == "torchserve-predictor-00001"
    assert "latestReadyRevision" not in predictor(plan)
    assert cond(plan, "Ready")["status"] == "Unknown"
    assert cond(plan, "PredictorReady")["reason"] == "RevisionMissing"
    assert plan.status["modelStatus"]["transitionStatus"] == "InProgress"
    assert plan.status["modelStatus"]["states"]["targetModelState"] == "Pending"


@pytest.mark.parametrize(
    ("change", "new_revision"),
    [
        ({"canaryTrafficPercent": 20}, False),  # traffic is not the template
        ({"minReplicas": 2}, True),
        ({"containerConcurrency": 5}, True),
    ],
)
def test_new_revision_only_on_template_change(change: Obj, new_revision: bool) -> None:
    before = isvc()
    after = isvc(**change)
    plan = run(after, rev(1, before))
    created = [a for a in plan.actions if isinstance(a, CreateRevision)]
    assert bool(created) is new_revision
    if new_revision:
        assert created[0].name == "torchserve-predictor-00002"


def test_an_annotation_change_is_a_new_revision() -> None:
    before = isvc()
    after = copy.deepcopy(before)
    after["metadata"]["annotations"] = {"serving.kserve.io/enable-tag-routing": "true"}
    plan = run(after, rev(1, before))
    assert CreateRevision("torchserve-predictor-00002", 2, template_hash(after)) in plan.actions


def test_ready_status_is_kserve_knative_mode() -> None:
    obj = isvc()
    plan = run(obj, rev(1, obj))
    s = plan.status
    assert s["url"] == "http://torchserve.kserve-test.example.com"
    assert s["address"] == {"url": "http://torchserve.kserve-test.svc.cluster.local"}
    assert s["deploymentMode"] == "Knative"
    assert s["clusterServingRuntimeName"] == "kserve-marserve"
    assert s["observedGeneration"] == 1
    p = predictor(plan)
    assert p["url"] == "http://torchserve-predictor.kserve-test.example.com"
    assert p["latestReadyRevision"] == p["latestRolledoutRevision"] == "torchserve-predictor-00001"
    assert p["traffic"] == [
        {"latestRevision": True, "percent": 100, "revisionName": "torchserve-predictor-00001"}
    ]
    kinds = [c["type"] for c in s["conditions"]]
    assert kinds == sorted(kinds)
    assert set(kinds) == {"IngressReady", "LatestDeploymentReady", "PredictorConfigurationReady",
                          "PredictorReady", "PredictorRouteReady", "Ready", "RoutesReady",
                          "Stopped"}  # fmt: skip
    for c in s["conditions"]:
        expected = None if c["type"] in ("Ready", "PredictorReady", "IngressReady") else "Info"
        assert c.get("severity") == expected
        assert c["status"] == ("False" if c["type"] == "Stopped" else "True")
    assert s["modelStatus"] == {
        "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
        "transitionStatus": "UpToDate",
        "copies": {"failedCopies": 0, "totalCopies": 1},
    }


def rolled_out(obj: Obj) -> Obj:
    """The status after revision 1 was ready and took 100 %."""
    return run(obj, rev(1, obj)).status


# (canaryTrafficPercent, revision 2 ready?) -> traffic as (revision number, percent, tag)
CANARY = [
    (20, True, [(2, 20, None), (1, 80, "prev")]),
    (20, False, [(1, 20, None), (1, 80, "prev")]),  # "latest" resolves to the last ready
    (0, True, [(2, 0, None), (1, 100, "prev")]),
    (100, True, [(2, 100, None)]),
    (None, True, [(2, 100, None)]),
]


@pytest.mark.parametrize(("percent", "ready", "expected"), CANARY)
def test_canary_traffic(percent: int | None, ready: bool, expected: list[Any]) -> None:
    v1 = isvc("gs://b/v1")
    v2 = isvc("gs://b/v2", **({} if percent is None else {"canaryTrafficPercent": percent}))
    plan = run(v2, rev(1, v1), rev(2, v2, ready=ready), status=rolled_out(v1))
    got = [
        (int(t["revisionName"][-5:]), t["percent"], t.get("tag"))
        for t in predictor(plan)["traffic"]
    ]
    assert got == expected
    assert predictor(plan)["latestCreatedRevision"] == "torchserve-predictor-00002"
    scaled = {a.name[-1]: a.replicas for a in plan.actions if isinstance(a, ScaleRevision)}
    assert scaled["2"] == 1  # the latest created always runs
    assert scaled["1"] == (1 if any(n == 1 for n, _, _ in expected) else 0)


def test_promotion_moves_rolled_out_and_previous() -> None:
    v1, v2 = isvc("gs://b/v1"), isvc("gs://b/v2")
    plan = run(v2, rev(1, v1), rev(2, v2), status=rolled_out(v1))
    p = predictor(plan)
    assert p["latestRolledoutRevision"] == "torchserve-predictor-00002"
    assert p["previousRolledoutRevision"] == "torchserve-predictor-00001"
    stop = ScaleRevision("torchserve-predictor-00001", 0)
    assert stop in plan.actions  # unreachable: scaled away


def test_tag_routing_tags_latest_with_urls() -> None:
    v1 = isvc("gs://b/v1")
    v2 = isvc("gs://b/v2", canaryTrafficPercent=10)
    v2["metadata"]["annotations"] = {"serving.kserve.io/enable-tag-routing": "true"}
    plan = run(v2, rev(1, v1), rev(2, v2), status=rolled_out(v1))
    traffic = predictor(plan)["traffic"]
    assert traffic[0]["tag"] == "latest"
    assert traffic[0]["url"] == "http://latest-torchserve-predictor.kserve-test.example.com"
    assert traffic[1]["url"] == "http://prev-torchserve-predictor.kserve-test.example.com"


def test_failing_canary_keeps_serving_the_old_revision() -> None:
    v1, v2 = isvc("gs://b/v1"), isvc("gs://b/v2", canaryTrafficPercent=50)
    crashed = (ReplicaView("pod-2", False, 3, "CrashLoopBackOff", BOOM),)
    plan = run(v2, rev(1, v1), rev(2, v2, replicas=crashed), status=rolled_out(v1))
    assert {t["revisionName"] for t in predictor(plan)["traffic"]} == {"torchserve-predictor-00001"}
    assert cond(plan, "Ready")["status"] == "False"
    assert cond(plan, "PredictorReady")["reason"] == "RevisionFailed"
    assert "initialize failed" in cond(plan, "PredictorReady")["message"]
    assert cond(plan, "LatestDeploymentReady")["reason"] == "PredictorConfigurationReady not ready"
    ms = plan.status["modelStatus"]
    assert ms["transitionStatus"] == "BlockedByFailedLoad"
    assert ms["states"] == {"activeModelState": "Loaded", "targetModelState": "FailedToLoad"}
    assert ms["lastFailureInfo"]["exitCode"] == 1
    assert ms["lastFailureInfo"]["reason"] == "ModelLoadFailed"
    assert ms["lastFailureInfo"]["modelRevisionName"] == "torchserve-predictor-00002"
    assert ms["copies"] == {"failedCopies": 1, "totalCopies": 0}


def test_storage_failure_is_failed_to_load_with_the_message() -> None:
    obj = isvc("gs://b/missing")
    failure = Failure("Error", 1, "gs://b/missing: no objects under this URI", NOW)
    broken = RevisionView("torchserve-predictor-00001", template_hash(obj), "failed", failure)
    plan = run(obj, broken)
    assert cond(plan, "Ready")["status"] == "False"
    assert "no objects under this URI" in cond(plan, "Ready")["message"]
    assert cond(plan, "PredictorRouteReady")["status"] == "False"
    info = plan.status["modelStatus"]["lastFailureInfo"]
    assert info["message"] == "gs://b/missing: no objects under this URI"
    assert plan.status["modelStatus"]["states"]["targetModelState"] == "FailedToLoad"


@pytest.mark.parametrize(("available", "scheduled"), [(0, False), (1, True)])
def test_gpus(available: int, scheduled: bool) -> None:
    obj = isvc(resources={"limits": {"memory": "4Gi", "nvidia.com/gpu": "1"}})
    view = RevisionView("torchserve-predictor-00001", template_hash(obj), "pending", gpus=1)
    plan = run(obj, view, gpus=available)
    assert ScaleRevision("torchserve-predictor-00001", 1 if scheduled else 0) in plan.actions
    if not scheduled:
        assert "Insufficient nvidia.com/gpu" in cond(plan, "Ready")["message"]
        assert cond(plan, "Ready")["status"] == "False"
        assert "torchserve-predictor-00001" in plan.unschedulable


@pytest.mark.parametrize(
    ("pred", "want"), [({}, 1), ({"minReplicas": 3}, 3), ({"minReplicas": 3, "maxReplicas": 2}, 2)]
)
def test_desired_replicas(pred: Obj, want: int) -> None:
    obj = isvc(**pred)
    plan = run(obj, rev(1, obj))
    assert ScaleRevision("torchserve-predictor-00001", want) in plan.actions


def test_transition_times_stay_while_status_stays() -> None:
    obj = isvc()
    first = run(obj, rev(1, obj)).status
    again = reconcile(
        {**obj, "status": first}, Observed((rev(1, obj),), now="2030-01-01T00:00:00Z")
    )
    assert [c["lastTransitionTime"] for c in again.status["conditions"]] == [NOW] * 8


def printer_row(obj: Obj) -> list[str]:
    """KServe's CRD printer columns (first JSONPath match, blank when absent), NAME..LATESTREADY."""
    status = obj.get("status") or {}
    traffic = (status.get("components") or {}).get("predictor", {}).get("traffic") or []
    prev = next((t for t in traffic if t.get("tag") == "prev"), {})
    latest = next((t for t in traffic if t.get("latestRevision") is True), {})
    ready = next((c["status"] for c in status.get("conditions", []) if c["type"] == "Ready"), "")
    cells = [obj["metadata"]["name"], status.get("url", ""), ready, prev.get("percent", ""),
             latest.get("percent", ""), prev.get("revisionName", ""),
             latest.get("revisionName", "")]  # fmt: skip
    return [str(c) for c in cells]


# KServe's canary example, the same states (names without the old "-default" infix).
ROWS = [
    (None, True, ["True", "", "100", "", "torchserve-predictor-00001"]),
    (10, True, ["True", "90", "10", "torchserve-predictor-00001", "torchserve-predictor-00002"]),
    (0, True, ["True", "100", "0", "torchserve-predictor-00001", "torchserve-predictor-00002"]),
]


@pytest.mark.parametrize(("percent", "second", "row"), ROWS)
def test_kubectl_get_isvc_columns_match_kserve(
    percent: int | None, second: bool, row: list[str]
) -> None:
    v1 = isvc("gs://b/v1")
    if percent is None:
        plan = run(v1, rev(1, v1))
        obj = {**v1, "status": plan.status}
    else:
        v2 = isvc("gs://b/v2", canaryTrafficPercent=percent)
        plan = run(v2, rev(1, v1), rev(2, v2), status=rolled_out(v1))
        obj = {**v2, "status": plan.status}
    assert printer_row(obj) == ["torchserve", "http://torchserve.kserve-test.example.com", *row]


def test_an_invalid_predictor_is_invalid_spec() -> None:
    obj = isvc(args=["--no-such-flag"])
    failure = Failure("InvalidSpec", 1, "spec.predictor.model.args: unknown argument", NOW)
    view = RevisionView("torchserve-predictor-00001", template_hash(obj), "failed", failure)
    plan = run(obj, view)
    ms = plan.status["modelStatus"]
    assert ms["transitionStatus"] == "InvalidSpec"
    assert ms["lastFailureInfo"]["reason"] == "InvalidPredictorSpec"
    assert "unknown argument" in cond(plan, "Ready")["message"]


@pytest.mark.parametrize(("desired", "pred", "want"), [(3, {}, 3), (3, {"maxReplicas": 2}, 2)])
def test_the_autoscalers_number_wins_within_max_replicas(
    desired: int, pred: Obj, want: int
) -> None:
    obj = isvc(**pred)
    plan = reconcile(obj, Observed((rev(1, obj),), desired=desired))
    assert ScaleRevision("torchserve-predictor-00001", want) in plan.actions
