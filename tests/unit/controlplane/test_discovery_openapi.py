"""Discovery documents and the OpenAPI v3 documents kubectl reads."""

from __future__ import annotations

import json

from marserve.controlplane import discovery, openapi


def test_group_and_resource_lists() -> None:
    groups = discovery.api_group_list()
    assert groups["kind"] == "APIGroupList"
    assert groups["groups"][0]["preferredVersion"]["groupVersion"] == "serving.kserve.io/v1beta1"
    isvc = discovery.resource_list("serving.kserve.io/v1beta1")
    assert isvc is not None
    by_name = {r["name"]: r for r in isvc["resources"]}
    main = by_name["inferenceservices"]
    assert main["shortNames"] == ["isvc"] and main["namespaced"] is True
    assert main["kind"] == "InferenceService" and "all" in main["categories"]
    assert {"create", "delete", "get", "list", "patch", "update", "watch"} <= set(main["verbs"])
    assert by_name["inferenceservices/status"]["verbs"] == ["get", "patch", "update"]
    core = discovery.resource_list("v1")
    assert core is not None
    names = {r["name"]: r for r in core["resources"]}
    assert names["pods"]["verbs"] == ["get", "list", "watch"]
    assert names["namespaces"]["namespaced"] is False and "create" in names["namespaces"]["verbs"]
    assert "pods/log" in names
    assert discovery.resource_list("apps/v1") is None


def test_openapi_v3_root_and_documents() -> None:
    root = openapi.root()["paths"]
    assert set(root) == {"api/v1", "apis/serving.kserve.io/v1beta1"}
    url = root["apis/serving.kserve.io/v1beta1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/serving.kserve.io/v1beta1?hash=")
    raw = openapi.by_path("apis/serving.kserve.io/v1beta1")
    assert raw is not None
    doc = json.loads(raw)
    item = doc["paths"][
        "/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/{name}"
    ]
    patch = item["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "serving.kserve.io",
        "version": "v1beta1",
        "kind": "InferenceService",
    }
    # fieldValidation listed: kubectl lets the server validate; no strategic merge: merge patches
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
    assert "application/strategic-merge-patch+json" not in patch["requestBody"]["content"]
    schema = doc["components"]["schemas"]["io.kserve.serving.v1beta1.InferenceService"]
    assert "storageUri" in json.dumps(schema["properties"]["spec"])
    assert openapi.by_path("apis/apps/v1") is None
