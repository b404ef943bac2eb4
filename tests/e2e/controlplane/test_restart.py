"""Controller restart: objects, resourceVersion, generation and the token survive; watches
resume from a resourceVersion or get 410 Gone when it is older than the kept history."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from marserve.controlplane.store import Store
from tests.e2e.controlplane.conftest import start_controller
from tests.e2e.controlplane.python_client import GROUP, PLURAL, VERSION, watch_isvcs

BASE = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"


def body(name: str) -> dict[str, object]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {
            "predictor": {"model": {"modelFormat": {"name": "pytorch"}, "storageUri": "s3://b/m"}}
        },
    }


def test_restart_keeps_state_and_watch_resumes_or_expires(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = start_controller(home)
    try:
        with first.client() as c:
            assert c.post(BASE, json=body("kept")).status_code == 201
            patch = {"spec": {"predictor": {"minReplicas": 2}}}
            headers = {"Content-Type": "application/merge-patch+json"}
            kept = c.patch(f"{BASE}/kept", content=orjson.dumps(patch), headers=headers).json()
        token = first.token
    finally:
        first.stop()
    assert kept["metadata"]["generation"] == 2

    second = start_controller(home)
    try:
        assert second.token == token  # the old kubeconfig's token still works
        with second.client() as c:
            again = c.get(f"{BASE}/kept").json()
            assert again["metadata"]["resourceVersion"] == kept["metadata"]["resourceVersion"]
            assert again["metadata"]["generation"] == 2
            assert again["metadata"]["uid"] == kept["metadata"]["uid"]
            assert c.post(BASE, json=body("after")).status_code == 201
        api = client.CustomObjectsApi(config.new_client_from_config(str(second.kubeconfig)))
        w = watch.Watch()
        seen = []
        for event in watch_isvcs(api, kept["metadata"]["resourceVersion"], 20, w):
            seen.append((event["type"], event["object"]["metadata"]["name"]))
            w.stop()
        assert seen == [("ADDED", "after")]
    finally:
        second.stop()

    store = Store(home / "controlplane.db", history=2)
    try:
        for i in range(4):
            store.create("events", {"metadata": {"name": f"e{i}", "namespace": "default"}})
    finally:
        store.close()
    third = start_controller(home)
    try:
        api = client.CustomObjectsApi(config.new_client_from_config(str(third.kubeconfig)))
        with pytest.raises(ApiException) as gone:
            for _ in watch_isvcs(api, kept["metadata"]["resourceVersion"], 20):
                pass
        assert gone.value.status == 410
        with third.client() as c:
            raw = c.get(BASE, params={"watch": "true", "resourceVersion": "1"})
            line = orjson.loads(raw.text.splitlines()[0])
            assert line["type"] == "ERROR" and line["object"]["code"] == 410
            assert line["object"]["reason"] == "Expired"
            names = [i["metadata"]["name"] for i in c.get(BASE).json()["items"]]
            assert names == ["after", "kept"]
    finally:
        third.stop()
