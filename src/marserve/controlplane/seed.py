"""The objects a fresh controller has: namespaces and the istio-ingressgateway Service."""

from __future__ import annotations

from marserve.controlplane.config import ControllerConfig
from marserve.controlplane.errors import NotFound
from marserve.controlplane.store import Obj, Store

INGRESS = ("services", "istio-system", "istio-ingressgateway")


def namespace(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def ingress_service(gateway_port: int) -> Obj:
    """The Service whose ``http2`` port and load-balancer IP the seeds' INGRESS_* commands read."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": INGRESS[2],
            "namespace": INGRESS[1],
            "labels": {"istio": "ingressgateway"},
        },
        "spec": {
            "type": "LoadBalancer",
            "selector": {"istio": "ingressgateway"},
            "ports": [
                {
                    "name": "http2",
                    "port": gateway_port,
                    "protocol": "TCP",
                    "targetPort": gateway_port,
                }
            ],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1", "hostname": "localhost"}]}},
    }


def seed(store: Store, config: ControllerConfig) -> None:
    """Create what is missing and point the ingress Service at ``config.gateway_port``."""
    for ns in ("default", "kube-system", "istio-system", "kserve"):
        try:
            store.get("namespaces", "", ns)
        except NotFound:
            store.create("namespaces", namespace(ns))
    wanted = ingress_service(config.gateway_port)
    try:
        current = store.get(*INGRESS)
    except NotFound:
        store.create("services", wanted)
        current = store.get(*INGRESS)
    if current.get("spec") != wanted["spec"]:
        current["spec"] = wanted["spec"]
        store.update("services", current)
    if current.get("status") != wanted["status"]:
        current = store.get(*INGRESS)
        current["status"] = wanted["status"]
        store.update_status("services", current)
