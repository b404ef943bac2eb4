"""Kubernetes Events for replicas (what ``kubectl describe pod`` lists), pure."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Note:
    """One thing the kubelet or scheduler would report: ``Normal`` or ``Warning``."""

    reason: str
    message: str
    type: str = "Normal"
    component: str = "kubelet"


def event_object(namespace: str, pod: str, note: Note, now: str) -> Obj:
    field_path = "spec.containers{kserve-container}" if note.component == "kubelet" else ""
    involved: Obj = {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": pod}
    if field_path:
        involved["fieldPath"] = field_path
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{pod}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": involved,
        "reason": note.reason,
        "message": note.message,
        "type": note.type,
        "source": {"component": note.component, "host": "marserve"},
        "reportingComponent": note.component,
        "reportingInstance": "marserve",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
