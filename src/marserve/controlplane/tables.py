"""``as=Table`` output, pure: KServe's printer columns for InferenceServices, kubectl's for core."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]
Cell = Callable[[Obj, datetime], Any]
Column = tuple[str, str, int, Cell]  # header, type, priority, value


def human_duration(seconds: float) -> str:
    """Kubernetes' ``HumanDuration``: ``45s``, ``3m20s``, ``5h``, ``2d3h``, ``400d``."""
    s = int(seconds)
    if seconds < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m, h, d = s // 60, s // 3600, s // 86400
    if m < 10:
        return f"{m}m" if s % 60 == 0 else f"{m}m{s % 60}s"
    if m < 180:
        return f"{m}m"
    if h < 8:
        return f"{h}h" if m % 60 == 0 else f"{h}h{m % 60}m"
    if h < 48:
        return f"{h}h"
    if h < 192:
        return f"{d}d" if h % 24 == 0 else f"{d}d{h % 24}h"
    if d < 365 * 2:
        return f"{d}d"
    y = d // 365
    return f"{y}y{d % 365}d" if d < 365 * 8 and d % 365 else f"{y}y"


def age(obj: Obj, now: datetime) -> str:
    raw = obj.get("metadata", {}).get("creationTimestamp")
    if not isinstance(raw, str):
        return "<unknown>"
    try:
        then = datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    return human_duration((now - then).total_seconds())


def _name(obj: Obj, now: datetime) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def _traffic(obj: Obj, key: str, match: Callable[[Obj], bool]) -> Any:
    """The first predictor traffic target that matches (the API server prints only the first)."""
    comps = (obj.get("status") or {}).get("components") or {}
    for target in (comps.get("predictor") or {}).get("traffic") or []:
        if isinstance(target, dict) and match(target) and key in target:
            return target[key]
    return None


def _condition(obj: Obj, kind: str) -> Any:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == kind:
            return cond.get("status")
    return None


def _prev(t: Obj) -> bool:
    return t.get("tag") == "prev"


def _latest(t: Obj) -> bool:
    return t.get("latestRevision") is True


ISVC_COLUMNS: list[Column] = [
    ("Name", "string", 0, _name),
    ("URL", "string", 0, lambda o, n: (o.get("status") or {}).get("url")),
    ("Ready", "string", 0, lambda o, n: _condition(o, "Ready")),
    ("Prev", "integer", 0, lambda o, n: _traffic(o, "percent", _prev)),
    ("Latest", "integer", 0, lambda o, n: _traffic(o, "percent", _latest)),
    ("PrevRolledoutRevision", "string", 0, lambda o, n: _traffic(o, "revisionName", _prev)),
    ("LatestReadyRevision", "string", 0, lambda o, n: _traffic(o, "revisionName", _latest)),
    ("Age", "string", 0, age),
]


def _containers(pod: Obj) -> list[Obj]:
    return [c for c in (pod.get("status") or {}).get("containerStatuses") or [] if c]


def _pod_ready(pod: Obj, now: datetime) -> str:
    statuses = _containers(pod)
    total = len((pod.get("spec") or {}).get("containers") or []) or len(statuses)
    return f"{sum(1 for c in statuses if c.get('ready'))}/{total}"


def _pod_status(pod: Obj, now: datetime) -> str:
    status = pod.get("status") or {}
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return "Terminating"
    for c in _containers(pod):
        waiting = (c.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return str(waiting["reason"])
    return str(status.get("reason") or status.get("phase") or "Unknown")


def _restarts(pod: Obj, now: datetime) -> int:
    return sum(int(c.get("restartCount") or 0) for c in _containers(pod))


def _ports(svc: Obj, now: datetime) -> str:
    ports = (svc.get("spec") or {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


def _external(svc: Obj, now: datetime) -> str:
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    ips = [i.get("ip") or i.get("hostname") for i in ingress if isinstance(i, dict)]
    return ",".join(str(i) for i in ips if i) or "<none>"


POD_COLUMNS: list[Column] = [
    ("Name", "string", 0, _name),
    ("Ready", "string", 0, _pod_ready),
    ("Status", "string", 0, _pod_status),
    ("Restarts", "string", 0, lambda o, n: str(_restarts(o, n))),
    ("Age", "string", 0, age),
    ("IP", "string", 1, lambda o, n: (o.get("status") or {}).get("podIP") or "<none>"),
    ("Node", "string", 1, lambda o, n: (o.get("spec") or {}).get("nodeName") or "<none>"),
]
NAMESPACE_COLUMNS: list[Column] = [
    ("Name", "string", 0, _name),
    ("Status", "string", 0, lambda o, n: (o.get("status") or {}).get("phase", "Active")),
    ("Age", "string", 0, age),
]
SERVICE_COLUMNS: list[Column] = [
    ("Name", "string", 0, _name),
    ("Type", "string", 0, lambda o, n: (o.get("spec") or {}).get("type", "ClusterIP")),
    ("Cluster-IP", "string", 0, lambda o, n: (o.get("spec") or {}).get("clusterIP") or "<none>"),
    ("External-IP", "string", 0, _external),
    ("Port(s)", "string", 0, _ports),
    ("Age", "string", 0, age),
]
EVENT_COLUMNS: list[Column] = [
    ("Last Seen", "string", 0, lambda o, n: event_age(o, n)),
    ("Type", "string", 0, lambda o, n: o.get("type", "Normal")),
    ("Reason", "string", 0, lambda o, n: o.get("reason", "")),
    ("Object", "string", 0, lambda o, n: _involved(o)),
    ("Message", "string", 0, lambda o, n: o.get("message", "")),
]
DEFAULT_COLUMNS: list[Column] = [("Name", "string", 0, _name), ("Age", "string", 0, age)]
COLUMNS = {
    "inferenceservices.serving.kserve.io": ISVC_COLUMNS,
    "pods": POD_COLUMNS,
    "namespaces": NAMESPACE_COLUMNS,
    "services": SERVICE_COLUMNS,
    "events": EVENT_COLUMNS,
}


def event_age(event: Obj, now: datetime) -> str:
    stamp = event.get("lastTimestamp") or event.get("metadata", {}).get("creationTimestamp")
    return age({"metadata": {"creationTimestamp": stamp}}, now)


def _involved(event: Obj) -> str:
    inv = event.get("involvedObject") or {}
    return f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}"


def _partial(obj: Obj) -> Obj:
    meta = {k: v for k, v in obj.get("metadata", {}).items() if k != "managedFields"}
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}


def table(
    resource: str,
    objs: list[Obj],
    rv: str | None,
    *,
    include: str = "Metadata",
    now: datetime | None = None,
) -> Obj:
    """A ``meta.k8s.io/v1`` Table of ``objs`` with the resource's printer columns."""
    when = now or datetime.now(UTC)
    columns = COLUMNS.get(resource, DEFAULT_COLUMNS)
    defs = [
        {
            "name": header,
            "type": kind,
            "format": "name" if header == "Name" else "",
            "description": header,
            "priority": priority,
        }
        for header, kind, priority, _ in columns
    ]
    rows = []
    for obj in objs:
        row: Obj = {"cells": [cell(obj, when) for *_, cell in columns]}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = _partial(obj)
        rows.append(row)
    meta = {"resourceVersion": rv} if rv is not None else {}
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": defs,
        "rows": rows,
    }


def describe_age(event: Obj, now: datetime) -> str:
    """An event's Age in ``kubectl describe``: ``5s``, ``2m (x3 over 10m)``, ``<unknown>``."""
    first = event.get("firstTimestamp") or event.get("eventTime")
    if not first:
        return "<unknown>"
    since_first = age({"metadata": {"creationTimestamp": first}}, now)
    count = int(event.get("count") or 1)
    if count > 1 and event.get("lastTimestamp"):
        last = age({"metadata": {"creationTimestamp": event["lastTimestamp"]}}, now)
        return f"{last} (x{count} over {since_first})"
    return since_first
