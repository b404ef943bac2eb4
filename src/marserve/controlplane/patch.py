"""Patch application, pure: JSON merge patch (RFC 7386) and JSON patch (RFC 6902)."""

from __future__ import annotations

import copy
from typing import Any

from marserve.controlplane.errors import BadRequest, Invalid, UnsupportedMediaType

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE, STRATEGIC, APPLY)


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with ``patch`` merged in: objects merge, ``null`` deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise BadRequest(f"json patch: invalid path {path!r}")
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, path: str, *, insert: bool) -> int:
    if insert and token == "-":  # noqa: S105
        return len(container)
    if not token.isdigit():
        raise Invalid(f"json patch: invalid array index {token!r} in {path}")
    idx = int(token)
    if idx > len(container) or (not insert and idx == len(container)):
        raise Invalid(f"json patch: index {idx} out of range in {path}")
    return idx


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    node = doc
    for token in parts[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, path, insert=False)]
        else:
            raise Invalid(f"json patch: path {path} does not exist")
    return node


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent, last = _parent(doc, parts, path), parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, path, insert=False)]
    raise Invalid(f"json patch: path {path} does not exist")


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise Invalid("json patch: cannot remove the whole document")
    parent, last = _parent(doc, parts, path), parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, path, insert=False))
    raise Invalid(f"json patch: unable to remove nonexistent key {last!r} at {path}")


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    parent, last = _parent(doc, parts, path), parts[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, insert=True), copy.deepcopy(value))
    else:
        raise Invalid(f"json patch: path {path} does not exist")
    return doc


def json_patch(target: Any, ops: Any) -> Any:
    """``target`` after the RFC 6902 operations ``ops`` (add/remove/replace/move/copy/test)."""
    if not isinstance(ops, list):
        raise BadRequest("json patch: the body must be a list of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "path" not in op:
            raise BadRequest(f"json patch: invalid operation {op!r}")
        kind, path = op.get("op"), op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise BadRequest(f"json patch: {kind} at {path} needs a value")
        if kind == "add":
            doc = _add(doc, path, op["value"])
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            _remove(doc, path) if _pointer(path) else None
            doc = _add(doc, path, op["value"])
        elif kind in ("move", "copy"):
            value = _get(doc, op.get("from", ""))
            if kind == "move":
                _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise Invalid(f"json patch: test failed at {path}")
        else:
            raise BadRequest(f"json patch: unknown operation {kind!r}")
    return doc


def apply_patch(target: Any, patch: Any, content_type: str, *, kind: str) -> Any:
    """Apply a merge or JSON patch; strategic merge is refused for custom resources, as the
    API server does (415), so kubectl falls back to a merge patch."""
    if content_type == MERGE:
        return merge_patch(target, patch)
    if content_type == JSON_PATCH:
        return json_patch(target, patch)
    if content_type == STRATEGIC:
        raise UnsupportedMediaType(
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{JSON_PATCH}, {MERGE}, {APPLY}"
        )
    raise UnsupportedMediaType(f"unsupported patch type {content_type!r} for {kind}")


_MISSING = object()


def three_way_merge(original: Any, modified: Any, current: Any) -> Any:
    """The merge patch ``kubectl apply`` sends: set what ``modified`` changes from ``current``,
    delete what ``original`` (the last-applied configuration) had and ``modified`` dropped."""
    patch: dict[str, Any] = {}
    orig = original if isinstance(original, dict) else {}
    cur = current if isinstance(current, dict) else {}
    for key, value in modified.items():
        have = cur.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(have, dict):
            sub = three_way_merge(orig.get(key), value, have)
            if sub:
                patch[key] = sub
        elif have != value:
            patch[key] = value
    for key in orig:
        if key not in modified and key in cur:
            patch[key] = None
    return patch
