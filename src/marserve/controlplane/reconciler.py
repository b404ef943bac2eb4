"""The reconciler, pure: an InferenceService and what is observed -> actions and KServe's status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from marserve.controlplane.revisions import revision_name, template_hash
from marserve.controlplane.runtime import SpecError, predictor_model, resources_of
from marserve.controlplane.traffic import canary_split

Obj = dict[str, Any]

RUNTIME = "kserve-marserve"
TAG_ROUTING = "serving.kserve.io/enable-tag-routing"
_PRIMARY = frozenset({"PredictorReady", "IngressReady", "Ready"})
INVALID_SPEC = "InvalidSpec"
"""The reason of a Failure that is the predictor's fault (an unknown flag, a bad quantity)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A terminated container (or a failed storage pull): reason, exit code, message, time."""

    reason: str
    exit_code: int
    message: str
    time: str


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica as the reconciler sees it (its Pod's ``kserve-container``)."""

    name: str
    ready: bool = False
    restarts: int = 0
    waiting: str | None = None
    last_failure: Failure | None = None


@dataclass(frozen=True, slots=True)
class RevisionView:
    """A revision: template hash, storage state, scheduling, replicas (oldest revision first)."""

    name: str
    template_hash: str
    storage: str = "pending"  # pending | pulling | ready | failed
    failure: Failure | None = None  # storage or spec failure: the revision cannot start
    gpus: int = 0
    replicas: tuple[ReplicaView, ...] = ()
    idle: bool = False
    """Was ready and is scaled to zero (or starting from it) with no failing replica: Knative
    keeps such a revision Ready, the activator holding its requests."""

    @property
    def ready(self) -> bool:
        return self.idle or any(r.ready for r in self.replicas)


@dataclass(frozen=True, slots=True)
class Observed:
    revisions: tuple[RevisionView, ...]
    domain: str = "example.com"
    now: str = "1970-01-01T00:00:00Z"
    gpus_available: int = 0
    desired: int | Mapping[str, int] | None = None
    """The autoscaler's number, when one runs: for every revision, or per revision name."""


@dataclass(frozen=True, slots=True)
class CreateRevision:
    name: str
    number: int
    template_hash: str


@dataclass(frozen=True, slots=True)
class ScaleRevision:
    """Run ``replicas`` replicas of a revision (``0`` stops them all)."""

    name: str
    replicas: int


Action = CreateRevision | ScaleRevision


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    status: Obj
    unschedulable: frozenset[str] = field(default_factory=frozenset)


def scheduler_message(gpus: int) -> str:
    return (
        (
            "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are "
            "available: 1 No preemption victims found for incoming pod."
        )
        if gpus
        else ""
    )


def revision_number(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def desired_replicas(isvc: Obj, observed: Observed, revision: str | None = None) -> int:
    pred = isvc.get("spec", {}).get("predictor") or {}
    raw, top = pred.get("minReplicas"), pred.get("maxReplicas")
    lo = raw if isinstance(raw, int) else 1
    hi = top if isinstance(top, int) else 0
    given = observed.desired
    if isinstance(given, Mapping):
        given = given.get(revision or "")
    want = given if given is not None else max(lo, 1)
    return min(want, hi) if hi > 0 else want


def reconcile(isvc: Obj, observed: Observed) -> Plan:
    """Create the revision the template asks for, scale revisions, and write KServe's status."""
    meta = isvc["metadata"]
    name = meta["name"]
    revisions = list(observed.revisions)
    actions: list[Action] = []
    wanted_hash = template_hash(isvc)
    if not revisions or revisions[-1].template_hash != wanted_hash:
        number = revision_number(revisions[-1].name) + 1 if revisions else 1
        new = RevisionView(revision_name(name, number), wanted_hash, gpus=_gpus(isvc))
        actions.append(CreateRevision(new.name, number, wanted_hash))
        revisions.append(new)
    latest = revisions[-1]
    unschedulable = {r.name for r in revisions if r.gpus > observed.gpus_available}
    previous = isvc.get("status") or {}
    latest_ready, rolled, prev_rolled, traffic = _rollout(isvc, revisions, previous)
    serving = {t["revisionName"] for t in traffic}
    for rev in revisions:
        keep = rev.name == latest.name or rev.name in serving
        want = desired_replicas(isvc, observed, rev.name)
        count = 0 if rev.name in unschedulable or not keep else want
        actions.append(ScaleRevision(rev.name, count))
    components = _components(meta, observed.domain, latest.name, traffic)
    for key, value in (
        ("latestReadyRevision", latest_ready),
        ("latestRolledoutRevision", rolled),
        ("previousRolledoutRevision", prev_rolled),
    ):
        if value:
            components[key] = value
    conditions = _conditions(latest, latest_ready, traffic, unschedulable, previous, observed.now)
    status = _status(isvc, observed, components, conditions)
    status["modelStatus"] = model_status(latest, components, conditions, previous, observed.now)
    return Plan(tuple(actions), status, frozenset(unschedulable))


def _rollout(
    isvc: Obj, revisions: list[RevisionView], previous: Obj
) -> tuple[str | None, str | None, str | None, list[Obj]]:
    """Latest ready, latest and previous rolled-out revisions, and the traffic (research 2.1)."""
    comp = (previous.get("components") or {}).get("predictor") or {}
    names = {r.name for r in revisions}
    ready = [r for r in revisions if r.ready]
    latest_ready = ready[-1].name if ready else _known(comp.get("latestReadyRevision"), names)
    rolled = _known(comp.get("latestRolledoutRevision"), names)
    prev_rolled = _known(comp.get("previousRolledoutRevision"), names)
    canary = (isvc.get("spec", {}).get("predictor") or {}).get("canaryTrafficPercent")
    annotations = isvc["metadata"].get("annotations") or {}
    tagged = str(annotations.get(TAG_ROUTING, "")).lower() == "true"
    traffic: list[Obj] = []
    for _ in range(3):  # traffic and roll-out bookkeeping reach a fixed point in <= 2 passes
        traffic = _traffic(latest_ready, rolled, canary, tagged)
        moved = _bookkeeping(traffic, latest_ready, revisions[-1].name, rolled, prev_rolled)
        if moved == (rolled, prev_rolled):
            break
        rolled, prev_rolled = moved
    return latest_ready, rolled, prev_rolled, traffic


def _components(meta: Obj, domain: str, latest: str, traffic: list[Obj]) -> Obj:
    name, ns = meta["name"], meta.get("namespace", "default")
    return {
        "url": f"http://{name}-predictor.{ns}.{domain}",
        "address": {"url": f"http://{name}-predictor.{ns}.svc.cluster.local"},
        "latestCreatedRevision": latest,
        "traffic": [_traffic_status(t, name, ns, domain) for t in traffic],
    }


def _gpus(isvc: Obj) -> int:
    try:
        return resources_of(predictor_model(isvc)).gpus
    except SpecError:
        return 0


def _known(value: object, names: set[str]) -> str | None:
    return value if isinstance(value, str) and value in names else None


def _traffic(latest_ready: str | None, rolled: str | None, canary: Any, tagged: bool) -> list[Obj]:
    """KServe's ksvc traffic with Knative's ``latestRevision`` resolved to the latest ready."""
    if latest_ready is None:
        return []
    percent = canary if isinstance(canary, int) and not isinstance(canary, bool) else None
    try:
        targets = canary_split(latest_ready, rolled, percent)
    except ValueError:
        targets = canary_split(latest_ready, None, None)
    out: list[Obj] = []
    for target in targets:
        is_latest = target.tag == "latest"
        tag = target.tag if (not is_latest or tagged) else None
        entry: Obj = {"latestRevision": is_latest, "percent": target.percent}
        entry["revisionName"] = target.revision
        if tag:
            entry["tag"] = tag
        out.append(entry)
    return sorted(out, key=lambda e: not e["latestRevision"])


def _bookkeeping(
    traffic: Sequence[Obj], ready: str | None, created: str, rolled: str | None, prev: str | None
) -> tuple[str | None, str | None]:
    """PropagateStatus: promote at 100 %, roll back after a promotion (research 2.1)."""
    for entry in traffic:
        if not entry["latestRevision"] or entry["revisionName"] != ready:
            continue
        if rolled != ready and entry["percent"] == 100:
            return ready, rolled
        total = sum(e["percent"] for e in traffic if e["revisionName"] == ready)
        if rolled == ready == created and entry["percent"] < 100 and total == 100 and prev:
            return prev, prev
    return rolled, prev


def _traffic_status(entry: Obj, name: str, namespace: str, domain: str) -> Obj:
    out = dict(entry)
    if "tag" in entry:
        out["url"] = f"http://{entry['tag']}-{name}-predictor.{namespace}.{domain}"
    return out


def _condition(kind: str, status: str, reason: str = "", message: str = "") -> Obj:
    cond: Obj = {"type": kind, "status": status}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    if kind not in _PRIMARY:
        cond["severity"] = "Info"
    return cond


def _revision_failure(rev: RevisionView, unschedulable: set[str]) -> str | None:
    if rev.name in unschedulable:
        return scheduler_message(rev.gpus)
    if rev.failure is not None:
        return rev.failure.message
    if rev.ready:
        return None
    failing = [r for r in rev.replicas if r.last_failure is not None and not r.ready]
    if failing and len(failing) == len(rev.replicas):
        f = failing[0].last_failure
        assert f is not None
        return f"Container failed with: {f.message}" if f.message else f.reason
    return None


def _conditions(
    latest: RevisionView,
    latest_ready: str | None,
    traffic: list[Obj],
    unschedulable: set[str],
    previous: Obj,
    now: str,
) -> list[Obj]:
    config_name = latest.name.rsplit("-", 1)[0]
    failed = _revision_failure(latest, unschedulable)
    if latest.ready:
        config = _condition("PredictorConfigurationReady", "True")
    elif failed is not None:
        msg = f'Revision "{latest.name}" failed with message: {failed}.'
        config = _condition("PredictorConfigurationReady", "False", "RevisionFailed", msg)
    else:
        config = _condition("PredictorConfigurationReady", "Unknown")
    if traffic:
        route = _condition("PredictorRouteReady", "True")
    else:
        msg = f'Configuration "{config_name}" does not have any ready Revision.'
        status = "False" if failed is not None else "Unknown"
        route = _condition("PredictorRouteReady", status, "RevisionMissing", msg)
    if config["status"] == "True" and route["status"] == "True":
        predictor = _condition("PredictorReady", "True")
    elif config["status"] == "False":
        predictor = _condition("PredictorReady", "False", "RevisionFailed", config["message"])
    else:
        msg = f'Configuration "{config_name}" is waiting for a Revision to become ready.'
        predictor = _condition("PredictorReady", "Unknown", "RevisionMissing", msg)
    ingress = _condition("IngressReady", "True")
    ready = dict(predictor, type="Ready")
    conds = [config, route, predictor, ingress, ready, _condition("Stopped", "False")]
    for kind, dep in (("LatestDeploymentReady", config), ("RoutesReady", route)):
        if dep["status"] == "True":
            conds.append(_condition(kind, "True"))
        else:
            conds.append(_condition(kind, "False", f"{dep['type']} not ready"))
    return _stamp(sorted(conds, key=lambda c: c["type"]), previous, now)


def _stamp(conds: list[Obj], previous: Obj, now: str) -> list[Obj]:
    """``lastTransitionTime``: kept while a condition's status stays, ``now`` when it flips."""
    old = {c.get("type"): c for c in previous.get("conditions") or [] if isinstance(c, dict)}
    for cond in conds:
        before = old.get(cond["type"])
        if before is not None and before.get("status") == cond["status"]:
            cond["lastTransitionTime"] = before.get("lastTransitionTime", now)
        else:
            cond["lastTransitionTime"] = now
    return conds


def _status(isvc: Obj, observed: Observed, components: Obj, conditions: list[Obj]) -> Obj:
    meta = isvc["metadata"]
    ns = meta.get("namespace", "default")
    return {
        "url": f"http://{meta['name']}.{ns}.{observed.domain}",
        "address": {"url": f"http://{meta['name']}.{ns}.svc.cluster.local"},
        "components": {"predictor": components},
        "conditions": conditions,
        "observedGeneration": meta.get("generation", 1),
        "deploymentMode": "Knative",
        "clusterServingRuntimeName": RUNTIME,
    }


def model_status(
    latest: RevisionView, components: Obj, conditions: list[Obj], previous: Obj, now: str
) -> Obj:
    """PropagateModelStatus over the latest created revision's pods."""
    old = previous.get("modelStatus") or {}
    states = dict(old.get("states") or {})
    failure = old.get("lastFailureInfo")
    ready_n = sum(1 for r in latest.replicas if r.ready)
    failed_n = sum(1 for r in latest.replicas if not r.ready and r.last_failure is not None)
    is_ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    new_failure: Failure | None = None
    if latest.failure is not None:
        target, new_failure = "FailedToLoad", latest.failure
    elif is_ready and components.get("latestReadyRevision") == latest.name:
        target = "Loaded"
    elif not latest.replicas:
        target = "Loading" if latest.storage == "pulling" else "Pending"
    else:
        crashed = [r for r in latest.replicas if r.last_failure is not None and not r.ready]
        if crashed and not latest.ready and crashed[0].last_failure is not None:
            target, new_failure = "FailedToLoad", crashed[0].last_failure
        else:
            target = "Pending"
    transition = {"Loaded": "UpToDate", "FailedToLoad": "BlockedByFailedLoad"}.get(
        target, "InProgress"
    )
    invalid = new_failure is not None and new_failure.reason == INVALID_SPEC
    if invalid:
        transition = INVALID_SPEC
    states["targetModelState"] = target
    if target == "Loaded":
        states["activeModelState"] = "Loaded"
    out: Obj = {
        "states": states,
        "transitionStatus": transition,
        "copies": {"failedCopies": failed_n, "totalCopies": ready_n},
    }
    if new_failure is not None:
        where = latest.replicas[0].name if latest.replicas else latest.name
        failure = {
            "location": where,
            "reason": "InvalidPredictorSpec" if invalid else "ModelLoadFailed",
            "message": new_failure.message,
            "modelRevisionName": latest.name,
            "exitCode": new_failure.exit_code,
            "time": new_failure.time,
        }
    if failure:
        out["lastFailureInfo"] = failure
    return out
