"""Pod objects for replicas, pure: Knative's names, phase, conditions and container statuses."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from marserve.controlplane.reconciler import Failure
from marserve.controlplane.replicas import PodState
from marserve.controlplane.revisions import ISVC_LABEL, REVISION_LABEL
from marserve.controlplane.runtime import CONTAINER, predictor_model

Obj = dict[str, Any]

# The alphabet Kubernetes uses for generated names and pod-template hashes (no vowels).
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _encode(data: bytes, length: int) -> str:
    number = int.from_bytes(data, "big")
    out = []
    for _ in range(length):
        number, digit = divmod(number, len(_ALPHABET))
        out.append(_ALPHABET[digit])
    return "".join(out)


def template_hash(revision: str) -> str:
    return _encode(hashlib.sha256(revision.encode()).digest(), 10)


def pod_name(revision: str, seed: str | None = None) -> str:
    """``NAME-predictor-0000N-deployment-<hash>-<suffix>``, as a Knative Deployment's pods; a
    ``seed`` makes the suffix stable (the one Pending pod of an unschedulable revision)."""
    raw = secrets.token_bytes(8) if seed is None else hashlib.sha256(seed.encode()).digest()
    return f"{revision}-deployment-{template_hash(revision)}-{_encode(raw, 5)}"


def _terminated(f: Failure, started: str | None) -> Obj:
    state: Obj = {"exitCode": f.exit_code, "reason": f.reason, "finishedAt": f.time}
    state["startedAt"] = started or f.time
    if f.message:
        state["message"] = f.message
    return state


def _container_status(state: PodState, image: str) -> Obj:
    view = state.view
    status: Obj = {
        "name": CONTAINER,
        "image": image,
        "imageID": "",
        "ready": view.ready,
        "started": state.running_since is not None,
        "restartCount": view.restarts,
        "lastState": {},
    }
    if view.last_failure is not None:
        status["lastState"] = {"terminated": _terminated(view.last_failure, None)}
    if state.running_since is not None:
        status["state"] = {"running": {"startedAt": state.running_since}}
    elif view.waiting == "CrashLoopBackOff" and view.last_failure is not None:
        message = f"back-off restarting failed container {CONTAINER} in pod {view.name}"
        status["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
    else:
        status["state"] = {"waiting": {"reason": view.waiting or "ContainerCreating"}}
    return status


def _cond(kind: str, ok: bool, now: str, reason: str = "", message: str = "") -> Obj:
    cond: Obj = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": now}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _pod_spec(isvc: Obj, state: PodState, image: str, args: list[str], scheduled: bool) -> Obj:
    ports = []
    if state.endpoint is not None:
        ports.append({"name": "http1", "containerPort": state.endpoint.port, "protocol": "TCP"})
        if state.endpoint.grpc_port is not None:
            ports.append({"name": "h2c", "containerPort": state.endpoint.grpc_port,
                          "protocol": "TCP"})  # fmt: skip
    container: Obj = {"name": CONTAINER, "image": image, "args": args, "ports": ports}
    resources = predictor_model(isvc).get("resources")
    if resources:
        container["resources"] = resources
    return {
        "containers": [container],
        "restartPolicy": "Always",
        "nodeName": "marserve" if scheduled else "",
    }


def _pod_status(
    state: PodState, image: str, now: str, created: str, unscheduled: str | None
) -> Obj:
    if unscheduled:
        return {
            "phase": "Pending",
            "conditions": [_cond("PodScheduled", False, now, "Unschedulable", unscheduled)],
            "qosClass": "Burstable",
        }
    ready = state.view.ready
    return {
        "phase": "Running" if state.running_since is not None else "Pending",
        "conditions": [
            _cond("PodReadyToStartContainers", True, created),
            _cond("Initialized", True, created),
            _cond("Ready", ready, now),
            _cond("ContainersReady", ready, now),
            _cond("PodScheduled", True, created),
        ],
        "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "startTime": created,
        "containerStatuses": [_container_status(state, image)],
        "qosClass": "Burstable",
    }


def pod_object(
    isvc: Obj,
    revision: str,
    state: PodState,
    *,
    image: str,
    args: list[str],
    now: str,
    created: str,
    unschedulable: str | None = None,
) -> Obj:
    """The Pod as ``kubectl get pods`` / ``describe`` / the SDK read it."""
    meta = isvc["metadata"]
    name = meta["name"]
    labels = {
        ISVC_LABEL: name,
        "component": "predictor",
        REVISION_LABEL: revision,
        "serving.knative.dev/configuration": f"{name}-predictor",
        "serving.knative.dev/service": f"{name}-predictor",
        "app": revision,
        "pod-template-hash": template_hash(revision),
    }
    annotations = {"marserve.dev/pid": str(state.pid or "")}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": state.view.name, "namespace": meta.get("namespace", "default"),
                     "labels": labels, "annotations": annotations},
        "spec": _pod_spec(isvc, state, image, args, scheduled=not unschedulable),
        "status": _pod_status(state, image, now, created, unschedulable),
    }  # fmt: skip
