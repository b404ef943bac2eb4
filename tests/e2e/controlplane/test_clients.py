"""The ``kubernetes`` Python client and KServe's own SDK against a real controller."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kserve import KServeClient
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.e2e.controlplane.conftest import Controller

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


def isvc(
    name: str, uri: str = "gs://kfserving-examples/models/torchserve/image_classifier/v1"
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name, "labels": {"team": "ml"}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "pytorch"}, "storageUri": uri}}},
    }


@pytest.fixture(scope="module")
def api(controller: Controller) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(config.new_client_from_config(str(controller.kubeconfig)))


def test_custom_objects_crud_and_watch(api: client.CustomObjectsApi) -> None:
    events: list[tuple[str, str, str]] = []
    listed = api.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    rv = listed["metadata"]["resourceVersion"]

    def consume() -> None:
        w = watch.Watch()
        for event in w.stream(
            api.list_namespaced_custom_object,
            GROUP,
            VERSION,
            "default",
            PLURAL,
            resource_version=rv,
            timeout_seconds=30,
        ):
            obj = event["object"]
            events.append(
                (event["type"], obj["metadata"]["name"], obj["metadata"]["resourceVersion"])
            )
            if event["type"] == "DELETED":
                w.stop()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    created = api.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, isvc("py-client")
    )
    assert created["metadata"]["generation"] == 1
    got = api.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "py-client")
    assert got["spec"]["predictor"]["minReplicas"] == 1
    patched = api.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "py-client", {"spec": {"predictor": {"maxReplicas": 3}}}
    )
    assert patched["metadata"]["generation"] == 2
    selected = api.list_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, label_selector="team in (ml,ops),!missing"
    )
    assert "py-client" in [i["metadata"]["name"] for i in selected["items"]]
    none = api.list_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, label_selector="team!=ml"
    )
    assert "py-client" not in [i["metadata"]["name"] for i in none["items"]]
    stale = dict(got)
    stale["spec"]["predictor"]["maxReplicas"] = 9
    with pytest.raises(ApiException) as conflict:
        api.replace_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "py-client", stale)
    assert conflict.value.status == 409
    api.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "py-client")
    thread.join(30)
    assert [e[:2] for e in events] == [
        ("ADDED", "py-client"),
        ("MODIFIED", "py-client"),
        ("DELETED", "py-client"),
    ]
    assert int(events[0][2]) < int(events[1][2]) < int(events[2][2])


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


def test_kserve_client(controller: Controller) -> None:
    kserve = KServeClient(config_file=str(controller.kubeconfig))
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
        with controller.client() as c:
            path = f"/apis/{GROUP}/{VERSION}/namespaces/default/inferenceservices/sdk/status"
            obj = c.get(path).json()
            obj["status"] = {
                "observedGeneration": obj["metadata"]["generation"],
                "conditions": [{"type": "Ready", "status": "True"}],
                "url": "http://sdk.default.example.com",
            }
            assert c.put(path, json=obj).status_code == 200

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
    with pytest.raises(RuntimeError, match="Not Found"):
        kserve.get("sdk", namespace="default")
