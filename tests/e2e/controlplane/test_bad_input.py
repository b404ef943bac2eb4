"""Bad input gets a clear 4xx Status; the controller stays up and the store stays intact."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.controlplane.conftest import Controller

BASE = "/apis/serving.kserve.io/v1beta1/namespaces/default/inferenceservices"
JSON = {"Content-Type": "application/json"}


def isvc(name: str, **extra: Any) -> dict[str, Any]:
    spec = {"predictor": {"model": {"modelFormat": {"name": "pytorch"}, "storageUri": "s3://b/m"}}}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": spec,
        **extra,
    }


def nested(levels: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for _ in range(levels):
        doc = {"a": doc}
    return doc


def deep_isvc() -> dict[str, Any]:
    obj = isvc("deep")
    obj["metadata"]["annotations"] = {}
    obj["spec"]["predictor"]["model"]["env"] = [{"name": "X", "valueFrom": nested(200)}]
    return obj


CASES = [
    ("malformed JSON", "POST", b'{"apiVersion": "serving', JSON, 400, "unknown format"),
    (
        "malformed YAML apply",
        "PATCH",
        b"a: [b\n  c: :",
        {"Content-Type": "application/apply-patch+yaml"},
        400,
        "unknown format",
    ),
    (
        "YAML alias bomb",
        "PATCH?fieldManager=bomb",
        b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
        {"Content-Type": "application/apply-patch+yaml"},
        400,
        "aliases",
    ),
    ("not an object", "POST", b"[1, 2]", JSON, 400, "must be a InferenceService object"),
    ("wrong kind", "POST", orjson.dumps({**isvc("k"), "kind": "Pod"}), JSON, 400, "do not match"),
    (
        "wrong apiVersion",
        "POST",
        orjson.dumps({**isvc("v"), "apiVersion": "serving.kserve.io/v1alpha1"}),
        JSON,
        400,
        "do not match",
    ),
    (
        "10 MB object",
        "POST",
        orjson.dumps(isvc("big", data="x" * 10_000_000)),
        JSON,
        413,
        "Request entity too large",
    ),
    ("300-character name", "POST", orjson.dumps(isvc("n" * 300)), JSON, 422, "metadata.name"),
    ("64-character name", "POST", orjson.dumps(isvc("n" * 64)), JSON, 422, "metadata.name"),
    ("deep nesting", "POST", orjson.dumps(deep_isvc()), JSON, 400, "nested deeper"),
    (
        "nesting past the parser",
        "POST",
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        JSON,
        400,
        "unknown format",
    ),
    (
        "two predictors",
        "POST",
        orjson.dumps(
            {
                **isvc("two"),
                "spec": {
                    "predictor": {
                        "model": {"modelFormat": {"name": "pytorch"}},
                        "pytorch": {"storageUri": "s3://x"},
                    }
                },
            }
        ),
        JSON,
        422,
        "exactly one",
    ),
    (
        "unknown field, strict",
        "POST?fieldValidation=Strict",
        orjson.dumps({**isvc("u"), "spec": {"predictor": {"pytorch": {"storageUrl": "s3://x"}}}}),
        JSON,
        422,
        "spec.predictor.pytorch.storageUrl",
    ),
    (
        "wrong type",
        "POST",
        orjson.dumps(
            {
                **isvc("t"),
                "spec": {
                    "predictor": {
                        "minReplicas": "one",
                        "model": {"modelFormat": {"name": "pytorch"}},
                    }
                },
            }
        ),
        JSON,
        422,
        "minReplicas",
    ),
    (
        "bad fieldValidation",
        "POST?fieldValidation=Loose",
        orjson.dumps(isvc("f")),
        JSON,
        400,
        "fieldValidation",
    ),
    ("bad dryRun", "POST?dryRun=Some", orjson.dumps(isvc("d")), JSON, 400, "dryRun"),
    (
        "strategic merge",
        "PATCH",
        b"{}",
        {"Content-Type": "application/strategic-merge-patch+json"},
        415,
        "json-patch",
    ),
    (
        "bad JSON patch",
        "PATCH",
        b'[{"op": "replace", "path": "/spec/nope/x", "value": 1}]',
        {"Content-Type": "application/json-patch+json"},
        422,
        "does not exist",
    ),
    (
        "apply without fieldManager",
        "PATCH",
        orjson.dumps(isvc("keep")),
        {"Content-Type": "application/apply-patch+yaml"},
        422,
        "fieldManager",
    ),
]


@pytest.fixture(scope="module")
def api(controller: Controller) -> httpx.Client:
    with controller.client() as c:
        assert c.post(BASE, json=isvc("keep")).status_code == 201
        yield c


@pytest.mark.parametrize(
    ("label", "method", "body", "headers", "code", "text"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_body(
    api: httpx.Client,
    label: str,
    method: str,
    body: bytes,
    headers: dict[str, str],
    code: int,
    text: str,
) -> None:
    before = api.get(f"{BASE}/keep").json()
    verb, _, query = method.partition("?")
    url = (BASE if verb == "POST" else f"{BASE}/keep") + (f"?{query}" if query else "")
    response = api.request(verb, url, content=body, headers=headers)
    assert response.status_code == code, response.text[:500]
    status = response.json()
    assert status["kind"] == "Status" and status["code"] == code
    assert text in status["message"], status["message"]
    assert api.get("/version").status_code == 200
    assert api.get(f"{BASE}/keep").json() == before


def test_paths_selectors_and_auth(api: httpx.Client, controller: Controller) -> None:
    for path in (
        "/apis/apps/v1/deployments",
        "/api/v1/secrets",
        "/nope",
        "/apis/serving.kserve.io/v1/x",
        "/api/v1/namespaces/default/pods/p/exec",
    ):
        response = api.get(path)
        assert response.status_code == 404 and response.json()["reason"] == "NotFound", path
    bad = api.get(BASE, params={"labelSelector": "a in (b"})
    assert bad.status_code == 400 and "unable to parse requirement" in bad.json()["message"]
    assert (
        api.post("/api/v1/namespaces/default/pods", json={"metadata": {"name": "p"}}).status_code
        == 405
    )
    assert api.delete("/api/v1/namespaces/default").status_code == 403
    assert api.post("/version", json={}).json()["reason"] == "MethodNotAllowed"
    anonymous = httpx.get(f"{controller.server}{BASE}", verify=controller.ca)
    assert anonymous.status_code == 401
    missing_ns = api.post(BASE.replace("default", "ghost"), json=isvc("x"))
    assert (
        missing_ns.status_code == 404
        and 'namespaces "ghost" not found' in missing_ns.json()["message"]
    )


def test_a_thousand_objects_hit_the_quota(api: httpx.Client) -> None:
    assert api.post("/api/v1/namespaces", json={"metadata": {"name": "crowd"}}).status_code == 201
    url = BASE.replace("default", "crowd")
    codes = [api.post(url, json=isvc(f"m{i}")).status_code for i in range(1000)]
    assert codes.count(201) == 500 and codes[500:] == [403] * 500
    refused = api.post(url, json=isvc("one-more")).json()
    assert refused["reason"] == "Forbidden" and "exceeded quota" in refused["message"]
    assert len(api.get(url).json()["items"]) == 500
    deleted = api.delete("/api/v1/namespaces/crowd")
    assert deleted.status_code == 200
    assert api.get(url.rsplit("/", 1)[0].replace("/inferenceservices", "")).status_code in (
        200,
        404,
    )
    assert api.get("/api/v1/namespaces/crowd").status_code == 404
    assert api.get(f"{BASE}/keep").status_code == 200


def test_dry_run_and_warnings(api: httpx.Client) -> None:
    dry = api.post(f"{BASE}?dryRun=All", json=isvc("dry"))
    assert dry.status_code == 201 and dry.json()["metadata"]["name"] == "dry"
    assert api.get(f"{BASE}/dry").status_code == 404
    exists = api.post(f"{BASE}?dryRun=All", json=isvc("keep"))
    assert exists.status_code == 409 and exists.json()["reason"] == "AlreadyExists"
    before = api.get(f"{BASE}/keep").json()
    patch = orjson.dumps({"spec": {"predictor": {"minReplicas": 4}}})
    dry_patch = api.patch(
        f"{BASE}/keep?dryRun=All",
        content=patch,
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert (
        dry_patch.status_code == 200 and dry_patch.json()["spec"]["predictor"]["minReplicas"] == 4
    )
    assert api.get(f"{BASE}/keep").json() == before
    assert api.delete(f"{BASE}/keep?dryRun=All").status_code == 200
    assert api.get(f"{BASE}/keep").status_code == 200
    obj = isvc("warned")
    obj["spec"]["predictor"]["model"]["storageUrl"] = "s3://typo"
    warned = api.post(f"{BASE}?fieldValidation=Warn", json=obj)
    assert warned.status_code == 201
    assert 'unknown field \\"spec.predictor.model.storageUrl\\"' in warned.headers["warning"]
    assert "storageUrl" not in warned.json()["spec"]["predictor"]["model"]
