"""watch=true over HTTP: JSON lines, timeoutSeconds, selectors, initial events and bookmarks."""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson

from tests.e2e.controlplane.conftest import Controller

BASE = "/apis/serving.kserve.io/v1beta1/namespaces/default/inferenceservices"


def isvc(name: str, team: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "labels": {"team": team}},
        "spec": {
            "predictor": {"model": {"modelFormat": {"name": "pytorch"}, "storageUri": "s3://b"}}
        },
    }


def events(controller: Controller, params: dict[str, str], until: str = "") -> list[dict[str, Any]]:
    """The stream's events, to its end or up to the first event of type ``until``."""
    out = []
    with controller.client() as c, c.stream("GET", BASE, params={"watch": "true", **params}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json")
        for line in r.iter_lines():
            if line:
                out.append(orjson.loads(line))
                if out[-1]["type"] == until:
                    break
    return out


def test_timeout_initial_events_and_end_bookmark(controller: Controller) -> None:
    with controller.client() as c:
        assert c.post(BASE, json=isvc("w-one", "ml")).status_code == 201
        rv = c.get(BASE).json()["metadata"]["resourceVersion"]
    started = time.monotonic()
    got = events(
        controller,
        {
            "timeoutSeconds": "1",
            "sendInitialEvents": "true",
            "resourceVersionMatch": "NotOlderThan",
            "allowWatchBookmarks": "true",
            "labelSelector": "team=ml",
        },
    )
    assert time.monotonic() - started < 30  # the server ended the stream itself
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in got][:2] == [
        ("ADDED", "w-one"),
        ("BOOKMARK", None),
    ]
    marker = got[1]["object"]["metadata"]
    assert marker["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert marker["resourceVersion"] == rv
    with controller.client() as c:
        bad = c.get(BASE, params={"watch": "true", "sendInitialEvents": "true"})
        assert bad.status_code == 422 and "resourceVersionMatch" in bad.json()["message"]


def test_selected_changes_from_a_resource_version(controller: Controller) -> None:
    with controller.client() as c:
        rv = c.get(BASE).json()["metadata"]["resourceVersion"]

    def writes() -> None:
        time.sleep(0.3)
        with controller.client() as c:
            c.post(BASE, json=isvc("w-ops", "ops"))
            c.post(BASE, json=isvc("w-ml", "ml"))
            c.delete(f"{BASE}/w-ml")

    thread = threading.Thread(target=writes)
    thread.start()
    got = events(
        controller, {"resourceVersion": rv, "timeoutSeconds": "3", "labelSelector": "team in (ml)"}
    )
    thread.join()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in got] == [
        ("ADDED", "w-ml"),
        ("DELETED", "w-ml"),
    ]
    assert int(got[0]["object"]["metadata"]["resourceVersion"]) > int(rv)


def test_label_changes_are_added_and_deleted_for_a_selector(controller: Controller) -> None:
    merge = {"Content-Type": "application/merge-patch+json"}
    with controller.client() as c:
        assert c.post(BASE, json=isvc("w-moves", "ops")).status_code == 201
        rv = c.get(BASE).json()["metadata"]["resourceVersion"]
        for team in ("ml", "ml", "ops"):
            label = orjson.dumps({"metadata": {"labels": {"team": team, "step": str(time.time())}}})
            assert c.patch(f"{BASE}/w-moves", content=label, headers=merge).status_code == 200
    got = events(
        controller,
        {"resourceVersion": rv, "timeoutSeconds": "60", "labelSelector": "team=ml"},
        until="DELETED",
    )
    assert [e["type"] for e in got] == ["ADDED", "MODIFIED", "DELETED"]
    assert got[-1]["object"]["metadata"]["labels"]["team"] == "ops"
