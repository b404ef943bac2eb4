"""Shared pieces of the metrics tests: a model handle that never starts, dashboard queries."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from marserve.archive import Manifest
from marserve.registry import ModelHandle
from marserve.settings import ServerSettings, model_config
from marserve.workers.messages import LoadModel
from marserve.workers.pool import PoolConfig, WorkerPool


def handle(name: str = "mnist", version: str = "1.0") -> ModelHandle:
    """A registered-looking model version whose pool is never started."""
    load = LoadModel(name, version, "/nowhere", {}, "handler.py", 1, 0, 1)
    pool = WorkerPool(load, PoolConfig(1, 1, 10.0, 10.0), lambda: 0)
    manifest = Manifest.build(model_name=name, handler="handler.py", model_version=version)
    return ModelHandle(
        name=name,
        version=version,
        config=model_config(name, version, ServerSettings()),
        manifest=manifest,
        model_dir=Path("/nowhere"),
        pool=pool,
        queue_limit=10,
    )


DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "marserve-dashboard.json"

# PromQL words that look like metric names but are not.
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
     "bool", "offset", "inf", "nan"}
)  # fmt: skip
# Not preceded by a digit (a duration such as 5m) or by $ (a Grafana variable).
_IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*")


def load_dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def expressions(dashboard: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append(target["expr"])
        for inner in panel.get("panels", []):  # collapsed rows keep their panels inside
            found += [t["expr"] for t in inner.get("targets", [])]
    return found


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not calls, labels or keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", text)  # grouping labels
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        following = text[match.end() :].lstrip()
        if not following.startswith("(") and word.lower() not in _KEYWORDS:
            names.add(word)
    return names


def dashboard_metric_names() -> set[str]:
    return {name for expr in expressions(load_dashboard()) for name in metric_names(expr)}
