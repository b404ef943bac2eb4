"""Request checks, pure: object limits, CRD schema, and ``fieldValidation=Strict|Warn|Ignore``."""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

from marserve.controlplane.errors import BadRequest, Invalid
from marserve.controlplane.openapi import isvc_schema
from marserve.kube.validate import schema_errors, unknown_fields

Obj = dict[str, Any]
MAX_DEPTH = 64
MAX_NAME = 253
MODES = ("Strict", "Warn", "Ignore")


def depth(doc: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of ``doc``, counting stops just past ``limit``."""
    stack, deepest = [(doc, 1)], 0
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(node, dict):
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, level + 1) for v in node)
    return deepest


def check_shape(obj: Any, kind: str, api_version: str) -> Obj:
    """The body as an object of ``kind``: nesting, apiVersion/kind and name length checked."""
    if not isinstance(obj, dict):
        raise BadRequest(
            f"the body of the request must be a {kind} object, not {type(obj).__name__}"
        )
    if depth(obj) > MAX_DEPTH:
        raise BadRequest(f"the object is nested deeper than {MAX_DEPTH} levels")
    got = (obj.get("apiVersion"), obj.get("kind"))
    if (got[0] is not None and got[0] != api_version) or (got[1] not in (None, kind)):
        raise BadRequest(
            f"the API version in the data ({got[0]}) and kind ({got[1]}) do not match the "
            f"expected {api_version} {kind}"
        )
    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise BadRequest("metadata: must be an object")
    name = (meta or {}).get("name")
    if name is not None and not isinstance(name, str):
        raise Invalid("metadata.name: Invalid value: must be a string", field="metadata.name")
    if isinstance(name, str) and len(name) > MAX_NAME:
        raise Invalid(
            f'{kind} "{name[:20]}...": metadata.name: Invalid value: must be no more than '
            f"{MAX_NAME} characters (got {len(name)})",
            field="metadata.name",
        )
    return obj


def field_validation(raw: str | None) -> str:
    """The ``fieldValidation`` query value; kubectl's and the API server's default is Strict
    for kubectl (it sends it) and Warn for everyone else."""
    if raw in (None, ""):
        return "Warn"
    if raw not in MODES:
        raise BadRequest(
            f"fieldValidation: Unsupported value: {raw!r}: supported values: "
            + ", ".join(f'"{m}"' for m in MODES)
        )
    return raw


def _prune(doc: Any, schema: Mapping[str, Any], top: bool) -> Any:
    if schema.get("x-kubernetes-preserve-unknown-fields") is True:
        return doc
    if isinstance(doc, dict):
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        out = {}
        for key, value in doc.items():
            if props is not None and key in props:
                out[key] = _prune(value, props[key], False)
            elif isinstance(extra, Mapping):
                out[key] = _prune(value, extra, False)
            elif props is None or (top and key in ("apiVersion", "kind", "metadata")):
                out[key] = value
        return out
    if isinstance(doc, list) and isinstance(schema.get("items"), Mapping):
        return [_prune(v, schema["items"], False) for v in doc]
    return doc


def check_isvc_schema(obj: Obj, mode: str) -> tuple[Obj, list[str]]:
    """The object pruned of unknown fields, and the warnings; Strict makes them a 422."""
    schema = isvc_schema()
    body = {k: v for k, v in obj.items() if k != "status"}
    unknown = [u.removesuffix(": unknown field") for u in unknown_fields(body, schema)]
    if unknown and mode == "Strict":
        fields = ", ".join(f'unknown field "{u}"' for u in unknown)
        err = Invalid(f"strict decoding error: {fields}", field=unknown[0])
        err.details = {
            "name": str(obj.get("metadata", {}).get("name", "")),
            "group": "serving.kserve.io",
            "kind": "InferenceService",
        }
        err.causes = [
            {"reason": "FieldValueInvalid", "field": u, "message": "field not declared in schema"}
            for u in unknown
        ]
        raise err
    warnings = [f'unknown field "{u}"' for u in unknown] if mode == "Warn" else []
    pruned = _prune(copy.deepcopy(obj), schema, True) if unknown else obj
    return pruned, warnings


@functools.cache
def _status_free_schema() -> Obj:
    schema = copy.deepcopy(isvc_schema())
    schema.get("properties", {}).pop("status", None)
    return schema


def check_isvc_types(obj: Obj) -> None:
    """Schema (type, enum, required) errors of the spec are a 422 naming the first field."""
    found = schema_errors({k: v for k, v in obj.items() if k != "status"}, _status_free_schema())
    if found:
        field = found[0].partition(":")[0]
        raise Invalid(
            f'InferenceService "{obj.get("metadata", {}).get("name", "")}" is invalid: '
            + "; ".join(found[:5]),
            field=field,
        )
