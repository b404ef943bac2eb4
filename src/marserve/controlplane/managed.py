"""Server-side apply, pure: field sets, ``managedFields`` (FieldsV1), conflicts and ownership."""

from __future__ import annotations

import copy
from typing import Any

from marserve.controlplane.errors import Conflict

Obj = dict[str, Any]
Path = tuple[str, ...]
_META = ("labels", "annotations", "finalizers", "ownerReferences")
_MISSING = object()


def leaf_paths(obj: Any, prefix: Path = ()) -> set[Path]:
    """Paths of every leaf (scalar, list: atomic as in a CRD, empty map) of a document."""
    if not isinstance(obj, dict) or not obj:
        return {prefix}
    out: set[Path] = set()
    for key, value in obj.items():
        out |= leaf_paths(value, (*prefix, str(key)))
    return out


def owned_part(obj: Obj) -> set[Path]:
    """The fields a manager can own: everything but status, identity and server metadata."""
    out: set[Path] = set()
    for key, value in obj.items():
        if key in ("apiVersion", "kind", "status"):
            continue
        if key == "metadata" and isinstance(value, dict):
            for mkey in _META:
                if mkey in value:
                    out |= leaf_paths(value[mkey], ("metadata", mkey))
            continue
        out |= leaf_paths(value, (key,))
    return out


def to_fields_v1(paths: set[Path]) -> Obj:
    """A FieldsV1 tree (``{"f:spec": {"f:x": {}}}``)."""
    root: Obj = {}
    for path in sorted(paths):
        node = root
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return root


def from_fields_v1(tree: Any, prefix: Path = ()) -> set[Path]:
    """Leaf paths of a FieldsV1 tree; ``k:``/``v:``/``.`` keys count as ``prefix`` itself."""
    if not isinstance(tree, dict):
        return set()
    children = {k: v for k, v in tree.items() if isinstance(k, str) and k.startswith("f:")}
    if not children:
        return {prefix} if prefix else set()
    out: set[Path] = set()
    for key, value in children.items():
        out |= from_fields_v1(value, (*prefix, key[2:]))
    return out


def _get(obj: Any, path: Path) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


def _delete(obj: Obj, path: Path) -> None:
    """Remove ``path`` and then any map it leaves empty."""
    chain = [obj]
    for part in path[:-1]:
        nxt = chain[-1].get(part)
        if not isinstance(nxt, dict):
            return
        chain.append(nxt)
    chain[-1].pop(path[-1], None)
    for depth in range(len(chain) - 1, 0, -1):
        if not chain[depth]:
            chain[depth - 1].pop(path[depth - 1], None)


def _overlap(a: Path, b: Path) -> bool:
    short = min(len(a), len(b))
    return a[:short] == b[:short]


def _deep_merge(base: Any, config: Any) -> Any:
    if not isinstance(base, dict) or not isinstance(config, dict) or not config:
        return copy.deepcopy(config)
    out = copy.deepcopy(base)
    for key, value in config.items():
        out[key] = _deep_merge(out.get(key), value)
    return out


def managers(obj: Obj) -> list[Obj]:
    return [dict(m) for m in obj.get("metadata", {}).get("managedFields") or []]


def _entry(manager: str, operation: str, api_version: str, now: str, paths: set[Path]) -> Obj:
    return {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    }


def _conflicts(
    current: Obj, config: Obj, mine: set[Path], entries: list[Obj], me: str
) -> list[tuple[str, str, Path]]:
    found: list[tuple[str, str, Path]] = []
    for entry in entries:
        if entry.get("manager") == me and entry.get("operation") == "Apply":
            continue
        for theirs in from_fields_v1(entry.get("fieldsV1")):
            for path in mine:
                if not _overlap(path, theirs):
                    continue
                at = path if len(path) <= len(theirs) else theirs
                if _get(current, at) != _get(config, at):
                    found.append((str(entry.get("manager")), str(entry.get("apiVersion")), at))
    return sorted(set(found))


def _conflict_error(found: list[tuple[str, str, Path]]) -> Conflict:
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f'conflict with "{m}" using {v}',
            "field": "." + ".".join(p),
        }
        for m, v, p in found
    ]
    if len(causes) == 1:
        text = f"Apply failed with 1 conflict: {causes[0]['message']}: {causes[0]['field']}"
    else:
        lines = "\n".join(f"- {c['message']}: {c['field']}" for c in causes)
        text = f"Apply failed with {len(causes)} conflicts:\n{lines}"
    err = Conflict(text)
    err.causes = causes
    return err


def server_side_apply(
    current: Obj | None, config: Obj, manager: str, *, force: bool, now: str
) -> Obj:
    """The object after ``manager`` applies ``config`` (a partial object) onto ``current``.

    Fields another manager owns with a different value are a :class:`Conflict` unless
    ``force``; fields this manager applied before and no longer sets are removed."""
    api_version = str(config.get("apiVersion", ""))
    mine = owned_part(config)
    if current is None:
        out = copy.deepcopy(config)
        out.setdefault("metadata", {})["managedFields"] = [
            _entry(manager, "Apply", api_version, now, mine)
        ]
        return out
    entries = managers(current)
    found = _conflicts(current, config, mine, entries, manager)
    if found and not force:
        raise _conflict_error(found)
    before = set()
    kept: list[Obj] = []
    for entry in entries:
        paths = from_fields_v1(entry.get("fieldsV1"))
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            before = paths
            continue
        if force:
            lost = {at for who, _, at in found if who == entry.get("manager")}
            paths = {p for p in paths if not any(_overlap(p, q) for q in lost)}
        if paths:
            kept.append({**entry, "fieldsV1": to_fields_v1(paths)})
    others = set().union(*(from_fields_v1(e["fieldsV1"]) for e in kept)) if kept else set()
    out = copy.deepcopy(current)
    for path in before - mine:
        if not any(_overlap(path, q) for q in others | mine):
            _delete(out, path)
    body = {k: v for k, v in config.items() if k not in ("status",)}
    meta = {k: v for k, v in (body.pop("metadata", {}) or {}).items() if k in _META}
    out = dict(_deep_merge(out, body))
    out["metadata"] = _deep_merge(out.get("metadata", {}), meta)
    out["metadata"]["managedFields"] = [*kept, _entry(manager, "Apply", api_version, now, mine)]
    return out


def record_update(old: Obj | None, new: Obj, manager: str, *, now: str) -> Obj:
    """``new`` with ``managedFields`` updated for a create/update/patch by ``manager``."""
    out = copy.deepcopy(new)
    entries = managers(old) if old is not None else []
    if old is not None and "managedFields" in out.get("metadata", {}):
        sent = out["metadata"]["managedFields"]
        if sent != old["metadata"].get("managedFields"):
            return out
    now_paths = owned_part(out)
    before = owned_part(old) if old is not None else set()
    changed = {p for p in now_paths | before if old is None or _get(old, p) != _get(out, p)}
    kept: list[Obj] = []
    mine: set[Path] = set()
    for entry in entries:
        paths = from_fields_v1(entry.get("fieldsV1"))
        paths = {p for p in paths if not any(_overlap(p, c) for c in changed)}
        if entry.get("manager") == manager and entry.get("operation") == "Update":
            mine = paths
        elif paths:
            kept.append({**entry, "fieldsV1": to_fields_v1(paths)})
    mine |= changed & now_paths
    api_version = str(out.get("apiVersion", ""))
    if mine:
        kept.append(_entry(manager, "Update", api_version, now, mine))
    out.setdefault("metadata", {})["managedFields"] = kept
    if not kept:
        out["metadata"].pop("managedFields")
    return out
