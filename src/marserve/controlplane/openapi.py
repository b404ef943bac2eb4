"""OpenAPI v3 documents, pure: built from KServe's CRD schema, as kubectl reads them.

kubectl asks ``/openapi/v3`` for the group versions, then each one's document; a PATCH
operation for the kind that lists the ``fieldValidation`` query parameter tells it to let the
server validate (``--validate=strict``). Not listing strategic merge makes ``kubectl apply``
send JSON merge patches, as it does for any custom resource.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from marserve.controlplane.resources import BY_GV, ISVC_GV, Resource
from marserve.kube.export import packaged

Doc = dict[str, Any]
PATCH_CONTENT = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
)
QUERY = ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")


@functools.cache
def isvc_schema() -> Doc:
    """KServe's ``openAPIV3Schema`` of InferenceService v1beta1 (packaged in ``marserve.kube``)."""
    schema: Doc = json.loads(packaged("inferenceservice.v1beta1.schema.json"))
    schema.pop("$comment", None)
    return schema


def _schema_name(res: Resource) -> str:
    if res.group_version == "v1":
        return f"io.k8s.api.core.v1.{res.kind}"
    return f"io.kserve.serving.v1beta1.{res.kind}"


def _gvk(res: Resource) -> Doc:
    group, _, version = res.group_version.rpartition("/")
    return {"group": group, "version": version, "kind": res.kind}


def _params(names: tuple[str, ...]) -> list[Doc]:
    return [
        {"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": True} for n in names
    ]


def _operations(res: Resource, ref: Doc) -> Doc:
    body = {"content": {"application/json": {"schema": ref}}}
    ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}
    ext = {"x-kubernetes-group-version-kind": _gvk(res)}
    ops: Doc = {"get": {"responses": ok, **ext}}
    if res.writable:
        patch_body = {"content": {c: {"schema": {"type": "object"}} for c in PATCH_CONTENT}}
        ops["put"] = {"parameters": _params(QUERY), "requestBody": body, "responses": ok, **ext}
        ops["patch"] = {
            "parameters": _params(QUERY),
            "requestBody": patch_body,
            "responses": ok,
            **ext,
        }
        ops["delete"] = {"parameters": _params(("dryRun",)), "responses": ok, **ext}
    return ops


def _paths(group_version: str) -> Doc:
    prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    paths: Doc = {}
    for res in BY_GV[group_version].values():
        ref = {"$ref": f"#/components/schemas/{_schema_name(res)}"}
        ns = "/namespaces/{namespace}" if res.namespaced else ""
        item = f"{prefix}{ns}/{res.plural}/{{name}}"
        paths[item] = _operations(res, ref)
        collection: Doc = {"get": {"responses": {"200": {"description": "OK"}}}}
        if res.writable:
            collection["post"] = {
                "parameters": _params(QUERY),
                "requestBody": {"content": {"application/json": {"schema": ref}}},
                "responses": {"201": {"description": "Created"}},
                "x-kubernetes-group-version-kind": _gvk(res),
            }
        paths[f"{prefix}{ns}/{res.plural}"] = collection
    return paths


def _schemas(group_version: str) -> Doc:
    out: Doc = {}
    for res in BY_GV[group_version].values():
        if group_version == ISVC_GV:
            schema = dict(isvc_schema())
        else:
            schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        schema["x-kubernetes-group-version-kind"] = [_gvk(res)]
        out[_schema_name(res)] = schema
    return out


@functools.cache
def group_version_doc(group_version: str) -> bytes:
    """The OpenAPI v3 document of one group version, serialised once."""
    doc = {
        "openapi": "3.0.0",
        "info": {"title": "marserve", "version": group_version},
        "paths": _paths(group_version),
        "components": {"schemas": _schemas(group_version)},
    }
    return json.dumps(doc).encode()


def doc_path(group_version: str) -> str:
    return "api/v1" if group_version == "v1" else f"apis/{group_version}"


def root() -> Doc:
    """``/openapi/v3``: each group version's document and its content hash."""
    paths = {}
    for gv in BY_GV:
        digest = hashlib.sha512(group_version_doc(gv)).hexdigest()[:64].upper()
        paths[doc_path(gv)] = {"serverRelativeURL": f"/openapi/v3/{doc_path(gv)}?hash={digest}"}
    return {"paths": paths}


def by_path(path: str) -> bytes | None:
    """The document served at ``/openapi/v3/<path>``, or ``None``."""
    for gv in BY_GV:
        if doc_path(gv) == path:
            return group_version_doc(gv)
    return None
