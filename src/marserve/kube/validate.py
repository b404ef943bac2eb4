"""Checks a manifest against a CRD's openAPIV3Schema, unknown fields included."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

# Every object has these, and CRD schemas leave metadata's inside unspecified.
_ALWAYS = frozenset({"apiVersion", "kind", "metadata"})


def schema_errors(doc: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """JSON-schema (Draft 7, as the API server's structural check) errors, one line each."""
    from jsonschema import Draft7Validator

    validator = Draft7Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{_path(e.absolute_path)}: {e.message}" for e in errors]


def unknown_fields(doc: Any, schema: Mapping[str, Any], path: str = "") -> list[str]:
    """Keys the schema does not declare (structural schemas accept and then drop them)."""
    return list(_walk(doc, schema, path))


def _walk(doc: Any, schema: Mapping[str, Any], path: str) -> Iterator[str]:
    if schema.get("x-kubernetes-preserve-unknown-fields") is True:
        return
    if isinstance(doc, Mapping):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in doc.items():
            here = f"{path}.{key}" if path else str(key)
            if properties is not None and key in properties:
                yield from _walk(value, properties[key], here)
            elif isinstance(extra, Mapping):
                yield from _walk(value, extra, here)
            elif properties is not None and not (path == "" and key in _ALWAYS):
                yield f"{here}: unknown field"
    elif isinstance(doc, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(doc):
            yield from _walk(item, schema["items"], f"{path}[{index}]")


def problems(doc: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Schema errors and unknown fields together; empty when the manifest is clean."""
    return schema_errors(doc, schema) + unknown_fields(doc, schema)


def _path(parts: Any) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
    return text.lstrip(".") or "(root)"
