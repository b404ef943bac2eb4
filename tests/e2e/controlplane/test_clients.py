"""The ``kubernetes`` Python client and KServe's own SDK against a real controller."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.e2e.controlplane.conftest import Controller
from tests.e2e.controlplane.python_client import GROUP, PLURAL, VERSION, isvc, watch_isvcs


@pytest.fixture(scope="module")
def api(controller: Controller) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(config.new_client_from_config(str(controller.kubeconfig)))


def test_custom_objects_crud_and_watch(api: client.CustomObjectsApi) -> None:
    events: list[tuple[str, str, str]] = []
    listed = api.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    rv = listed["metadata"]["resourceVersion"]

    def consume() -> None:
        w = watch.Watch()
        for event in watch_isvcs(api, rv, 30, w):
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


def test_kserve_client(controller: Controller) -> None:
    """KServe's SDK runs in a process of its own: its v2 gRPC protos and tritonclient's define the
    same ``inference.*`` symbols, and one protobuf descriptor pool refuses to hold both."""
    script = Path(__file__).with_name("kserve_sdk_session.py")
    done = subprocess.run(
        [sys.executable, str(script), str(controller.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "kserve sdk session: ok"
