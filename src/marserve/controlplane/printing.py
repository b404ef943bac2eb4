"""What kubectl prints, pure: server tables as aligned text, ``describe``, ``-o yaml|json``."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

Obj = dict[str, Any]
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_ACRONYMS = {"API", "URL", "UID", "OSB", "GUID"}
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def align(rows: list[list[str]], *, minwidth: int = 6, padding: int = 3) -> str:
    """Columns as Go's tabwriter lays them out for kubectl (the last column is not padded)."""
    if not rows:
        return ""
    widths = [
        max(minwidth, max(len(r[i]) for r in rows) + padding) for i in range(len(rows[0]) - 1)
    ]
    lines = []
    for row in rows:
        text = "".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + row[-1]
        lines.append(text.rstrip())
    return "\n".join(lines) + "\n"


def table_text(table: Obj, *, wide: bool = False, namespaces: bool = False) -> str:
    """A ``meta.k8s.io/v1`` Table as ``kubectl get`` prints it."""
    columns = table.get("columnDefinitions") or []
    keep = [i for i, c in enumerate(columns) if wide or int(c.get("priority", 0)) == 0]
    header = [str(columns[i]["name"]).upper() for i in keep]
    rows = []
    for row in table.get("rows") or []:
        cells = [_cell(row["cells"][i]) for i in keep]
        if namespaces:
            meta = (row.get("object") or {}).get("metadata") or {}
            cells.insert(0, str(meta.get("namespace", "")))
        rows.append(cells)
    if namespaces:
        header.insert(0, "NAMESPACE")
    return align([header, *rows])


def smart_label(field: str) -> str:
    """kubectl's field label: ``storageUri`` -> ``Storage Uri``, ``uid`` -> ``UID``."""
    words = _WORDS.findall(field) or [field]
    return " ".join(w.upper() if w.upper() in _ACRONYMS else w[:1].upper() + w[1:] for w in words)


def _walk(value: Any, indent: int, lines: list[tuple[str, str | None]]) -> None:
    pad = "  " * indent
    if isinstance(value, dict):
        for key in sorted(value):
            item = value[key]
            label = f"{pad}{smart_label(str(key))}:"
            if isinstance(item, dict | list) and item:
                lines.append((label, None))
                _walk(item, indent + 1, lines)
            else:
                lines.append((label, _scalar(item)))
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                _walk(item, indent, lines)
            else:
                lines.append((f"{pad}{_scalar(item)}", None))


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None or value == {} or value == []:
        return ""
    return str(value)


def _render(lines: list[tuple[str, str | None]]) -> str:
    """Blocks of consecutive ``label: value`` lines share one value column (padding 2)."""
    out: list[str] = []
    block: list[tuple[str, str]] = []

    def flush() -> None:
        if block:
            width = max(len(label) for label, _ in block) + 2
            out.extend(f"{label.ljust(width)}{value}".rstrip() for label, value in block)
            block.clear()

    for label, value in lines:
        if value is None:
            flush()
            out.append(label)
        else:
            block.append((label, value))
    flush()
    return "\n".join(out) + "\n"


def _pairs(label: str, values: dict[str, Any], sep: str) -> list[tuple[str, str | None]]:
    items = [f"{k}{sep}{v}" for k, v in sorted(values.items()) if k != LAST_APPLIED]
    if not items:
        return [(label, "<none>")]
    return [(label, items[0]), *(("", item) for item in items[1:])]


def _events(events: list[Obj]) -> list[tuple[str, str | None]]:
    if not events:
        return [("Events:", "<none>")]
    rows = [
        ["Type", "Reason", "Age", "From", "Message"],
        ["----", "------", "----", "----", "-------"],
    ]
    for ev in events:
        source = (ev.get("source") or {}).get("component") or ev.get("reportingComponent", "")
        rows.append(
            [
                str(ev.get("type", "")),
                str(ev.get("reason", "")),
                str(ev.get("age", "")),
                str(source),
                str(ev.get("message", "")),
            ]
        )
    table = align(rows, minwidth=0, padding=2)
    return [("Events:", None), *((f"  {line}", None) for line in table.splitlines())]


def describe(obj: Obj, events: list[Obj]) -> str:
    """``kubectl describe`` of a custom resource (its generic describer)."""
    meta = dict(obj.get("metadata") or {})
    lines: list[tuple[str, str | None]] = [("Name:", str(meta.get("name", "")))]
    if "namespace" in meta:
        lines.append(("Namespace:", str(meta["namespace"])))
    lines += _pairs("Labels:", meta.get("labels") or {}, "=")
    lines += _pairs("Annotations:", meta.get("annotations") or {}, ": ")
    lines += [("API Version:", str(obj.get("apiVersion", ""))), ("Kind:", str(obj.get("kind", "")))]
    rest = {
        k: v
        for k, v in meta.items()
        if k not in ("name", "namespace", "labels", "annotations", "managedFields")
    }
    body: Obj = {"metadata": rest} if rest else {}
    body.update({k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")})
    _walk(body, 0, lines)
    lines += _events(events)
    return _render(lines)


def strip(obj: Obj) -> Obj:
    """What ``kubectl get -o yaml`` shows: no managedFields."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}


def as_list(items: list[Obj]) -> Obj:
    return {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}


class _KubeDumper(yaml.SafeDumper):
    """Strings as kubectl's YAML writes them: plain when unambiguous, else double-quoted,
    multi-line ones as ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value.rstrip("\n") or value.endswith("\n"):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    try:
        plain = value != "" and yaml.safe_load(value) == value and value.strip() == value
    except yaml.YAMLError:
        plain = False
    plain = plain and not value.startswith(("{", "[", "*", "&", "!", "%", "@", "`", "'", '"'))
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=None if plain else '"')


_KubeDumper.add_representer(str, _str)


def to_yaml(doc: Obj) -> str:
    return yaml.dump(
        doc, Dumper=_KubeDumper, sort_keys=True, default_flow_style=False, width=10_000
    )


def to_json(doc: Obj) -> str:
    return json.dumps(doc, indent=4, sort_keys=True) + "\n"
