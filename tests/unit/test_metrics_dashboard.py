"""The shipped Grafana dashboard parses and queries only metrics marserve exports."""

from __future__ import annotations

import json
from typing import Any

import pytest
from metrics_fixtures import dashboard_metric_names, expressions, load_dashboard, metric_names
from prometheus_client import CollectorRegistry

from marserve.observability.metrics import ServerMetrics
from marserve.registry import ModelRegistry


def test_the_parser_finds_metric_names_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (le, model) (rate(a_bucket{model=~"$model",x="sum(b)"}'
        "[$__rate_interval]))) / ignoring(x) c_total + on(y) group_left d offset 5m"
    )
    assert metric_names(expr) == {"a_bucket", "c_total", "d"}


def test_dashboard_parses_and_is_importable() -> None:
    dashboard = load_dashboard()
    assert dashboard["title"] == "marserve" and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"], panel["title"]
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs))


@pytest.mark.parametrize(
    "topic",
    [
        "request rate by status",
        "latency",
        "queue depth",
        "batch size",
        "workers by state",
        "explain latency",
        "rejected requests",
        "worker restarts",
        "replicas per revision",
        "autoscaler panic mode",
        "traffic split per revision",
    ],
)
def test_dashboard_has_a_panel_for(topic: str) -> None:
    titles = [panel["title"].lower() for panel in load_dashboard()["panels"]]
    assert any(topic in title for title in titles), titles


def unexported(dashboard: dict[str, Any], exported: frozenset[str]) -> set[str]:
    return {name for expr in expressions(dashboard) for name in metric_names(expr)} - exported


def control_plane_names() -> frozenset[str]:
    """The sample names ``marserve controller`` exports: the gateway's and the autoscaler's."""
    from marserve.controlplane.autoscaling import Autoscaler
    from marserve.controlplane.gateway.metrics import GatewayMetrics

    registry = CollectorRegistry()
    GatewayMetrics(registry)
    Autoscaler(dict, registry=registry)
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count")}
    return frozenset(
        family.name + suffix
        for family in registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    )


def test_every_query_names_a_metric_marserve_exports() -> None:
    metrics = ServerMetrics(ModelRegistry(), registry=CollectorRegistry(), hostname="h")
    exported = metrics.exported_names() | control_plane_names()
    assert "marserve_autoscaler_desired_replicas" in exported
    assert "marserve_gateway_requests_total" in exported
    dashboard = load_dashboard()
    assert dashboard_metric_names(), "the dashboard queries nothing"
    assert unexported(dashboard, exported) == set()
    for expr in expressions(dashboard):
        assert metric_names(expr), expr  # every query names at least one metric
    # the check notices a query naming a metric marserve does not have
    broken = json.loads(json.dumps(dashboard).replace("marserve_queue_depth", "queue_size"))
    assert unexported(broken, exported) == {"queue_size"}
