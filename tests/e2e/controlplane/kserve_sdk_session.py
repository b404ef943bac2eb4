"""KServe's SDK (``kserve.KServeClient``) against a running controller, in a process of its own.

Run by ``test_clients.test_kserve_client`` as ``python kserve_sdk_session.py KUBECONFIG``; prints
``kserve sdk session: ok`` when every step behaved as against a cluster.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from kserve import KServeClient
from kubernetes import client, config
from python_client import GROUP, PLURAL, VERSION, isvc  # beside this script, on its sys.path


class _Meta:
    """``.metadata`` as KServe's SDK reads and writes it, over the dict's ``metadata``."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self._meta = meta

    @property
    def name(self) -> Any:
        return self._meta.get("name")

    @property
    def namespace(self) -> Any:
        return self._meta.get("namespace")

    @property
    def resource_version(self) -> Any:
        return self._meta.get("resourceVersion")

    @resource_version.setter
    def resource_version(self, value: str) -> None:
        self._meta["resourceVersion"] = value


class SdkIsvc(dict[str, Any]):
    """An InferenceService for ``KServeClient``: kserve 0.21 reads ``.api_version`` and
    ``.metadata`` of its argument, while kubernetes 37's (pydantic) CustomObjectsApi accepts only
    a dict, so the SDK's own model classes fail on the client side; this is both."""

    @property
    def api_version(self) -> str:
        return str(self["apiVersion"])

    @property
    def metadata(self) -> _Meta:
        return _Meta(self["metadata"])


def sdk_isvc(name: str, min_replicas: int | None = None, max_replicas: int | None = None) -> Any:
    body = isvc(name)
    body["metadata"]["namespace"] = "default"
    pred = body["spec"]["predictor"]
    if min_replicas is not None:
        pred["minReplicas"] = min_replicas
    if max_replicas is not None:
        pred["maxReplicas"] = max_replicas
    return SdkIsvc(body)


def session(kubeconfig: str) -> None:
    kserve = KServeClient(config_file=kubeconfig)
    api = client.CustomObjectsApi(config.new_client_from_config(kubeconfig))
    created = kserve.create(sdk_isvc("sdk"))
    assert created["metadata"]["generation"] == 1
    assert kserve.get("sdk", namespace="default")["spec"]["predictor"]["minReplicas"] == 1
    patched = kserve.patch("sdk", sdk_isvc("sdk", min_replicas=2))
    assert patched["spec"]["predictor"]["minReplicas"] == 2
    replaced = kserve.replace("sdk", sdk_isvc("sdk", min_replicas=2, max_replicas=4))
    assert replaced["spec"]["predictor"]["maxReplicas"] == 4
    assert replaced["metadata"]["generation"] == 3
    assert not kserve.is_isvc_ready("sdk", namespace="default")

    def mark_ready() -> None:
        time.sleep(0.5)
        obj = api.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "sdk")
        obj["status"] = {
            "observedGeneration": obj["metadata"]["generation"],
            "conditions": [{"type": "Ready", "status": "True"}],
            "url": "http://sdk.default.example.com",
        }
        api.replace_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, "sdk", obj)

    threading.Thread(target=mark_ready, daemon=True).start()
    kserve.wait_isvc_ready("sdk", namespace="default", timeout_seconds=30, polling_interval=0.2)
    assert kserve.is_isvc_ready("sdk", namespace="default", expected_generation=3)
    # the SDK's watch variant follows a watch stream until observedGeneration and Ready match
    patched = kserve.patch("sdk", sdk_isvc("sdk", min_replicas=3, max_replicas=4))
    assert patched["metadata"]["generation"] == 4
    threading.Thread(target=mark_ready, daemon=True).start()
    kserve.wait_isvc_ready(
        "sdk", namespace="default", watch=True, timeout_seconds=30, expected_generation=4
    )
    assert kserve.is_isvc_ready("sdk", namespace="default", expected_generation=4)
    kserve.delete("sdk", namespace="default")
    try:
        kserve.get("sdk", namespace="default")
    except RuntimeError as exc:
        assert "Not Found" in str(exc), exc
    else:
        raise AssertionError("the deleted InferenceService is still there")


if __name__ == "__main__":
    session(sys.argv[1])
    print("kserve sdk session: ok")
