"""Kubernetes label selectors: parse ``a=b,c!=d,e in (x,y),f notin (z),g,!h`` and match labels."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from marserve.controlplane.errors import BadRequest

_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_SET = re.compile(r"^\s*(!?)\s*([^\s!=,()]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_CMP = re.compile(r"^\s*([^\s!=,()]+)\s*(==|!=|=)\s*([^\s!=,()]*)\s*$")


@dataclass(frozen=True, slots=True)
class Requirement:
    """One term: ``op`` is ``in``, ``notin``, ``exists`` or ``!``; ``=``/``==`` are ``in``."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        if self.op == "in":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values


Selector = tuple[Requirement, ...]


def _split(raw: str) -> list[str]:
    """Split on commas that are not inside ``( )``."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(raw):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            terms.append(raw[start:i])
            start = i + 1
    terms.append(raw[start:])
    return [t for t in terms if t.strip()]


def _key(key: str, term: str) -> str:
    if not _KEY.match(key) or len(key) > 316:
        raise BadRequest(f"unable to parse requirement: invalid label key {key!r} in {term!r}")
    return key


def parse(raw: str | None) -> Selector:
    """The requirements of a ``labelSelector`` query value; :class:`BadRequest` when malformed."""
    out: list[Requirement] = []
    for term in _split(raw or ""):
        cmp = _CMP.match(term)
        if cmp:
            key, op, value = cmp.groups()
            kind = "notin" if op == "!=" else "in"
            out.append(Requirement(_key(key, term), kind, frozenset({value})))
            continue
        found = _SET.match(term)
        if not found:
            raise BadRequest(f"unable to parse requirement: {term.strip()!r}")
        neg, key, op, values = found.groups()
        if neg and op:
            raise BadRequest(f"unable to parse requirement: {term.strip()!r}")
        if op:
            items = frozenset(v.strip() for v in values.split(",") if v.strip())
            out.append(Requirement(_key(key, term), op, items))
        else:
            out.append(Requirement(_key(key, term), "!" if neg else "exists"))
    return tuple(out)


def matches(selector: Selector, labels: Mapping[str, str] | None) -> bool:
    """Whether every requirement holds for ``labels``."""
    have = labels or {}
    return all(r.matches(have) for r in selector)


FieldSelector = tuple[tuple[str, bool, str], ...]
"""``(path, negated, value)`` terms of a ``fieldSelector``."""


def parse_fields(raw: str | None) -> FieldSelector:
    """A ``fieldSelector``: ``path=value``, ``path==value`` or ``path!=value`` terms."""
    out = []
    for term in filter(None, (t.strip() for t in (raw or "").split(","))):
        key, neg, value = term.partition("!=")
        if not neg:
            key, eq, value = term.partition("=")
            if not eq:
                raise BadRequest(f"invalid selector: {term!r}; can't understand {term!r}")
            value = value.removeprefix("=")
        if not key.strip():
            raise BadRequest(f"invalid selector: {term!r}: a field path is required")
        out.append((key.strip(), bool(neg), value.strip()))
    return tuple(out)


def _field(obj: object, path: str) -> str:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return "" if obj is None else str(obj)


def fields_match(selector: FieldSelector, obj: Mapping[str, object]) -> bool:
    """Whether every ``path=value`` (or ``!=``) term holds for ``obj``."""
    return all((_field(obj, path) == value) != neg for path, neg, value in selector)
