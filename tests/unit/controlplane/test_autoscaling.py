"""The autoscaler's shell over the pure KPA: sampling the gateway's stats, ticks, pokes, gauges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from marserve.controlplane.autoscaler import defaults_from
from marserve.controlplane.autoscaling import Autoscaler, Target, scale_event
from marserve.controlplane.gateway.metrics import RevisionStats
from marserve.controlplane.reconciler import Observed, RevisionView, desired_replicas

REV = ("default", "svc-predictor-00001")
SHORT = defaults_from({"stable-window": "6s", "tick": "1s", "scale-to-zero-grace-period": "2s"})


def isvc(**predictor: Any) -> dict[str, Any]:
    notes = {"autoscaling.knative.dev/target": "10"}
    return {"metadata": {"name": "svc", "namespace": "default", "annotations": notes},
            "spec": {"predictor": {"model": {}, **predictor}}}  # fmt: skip


class Load:
    """The gateway's stats() with an in-flight count the test sets."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.requests = 0

    def __call__(self) -> dict[tuple[str, str], RevisionStats]:
        return {REV: RevisionStats(*REV, self.in_flight, self.requests)}


def run(scaler: Autoscaler, obj: dict[str, Any], load: Load, ready: int, seconds: float,
        start: float) -> float:  # fmt: skip
    """Sample four times a second and tick every second for ``seconds``; returns the clock."""
    now = start
    while now < start + seconds:
        target = Target("default", "svc", REV[1], obj, ready)
        scaler.track([target], now)
        poked = scaler.sample(now)
        if abs(now - round(now)) < 1e-9:
            scaler.decide([target], now)
        elif poked:
            scaler.decide([target], now, set(poked))
        now += 0.25
    return now


def test_fifty_in_flight_at_target_ten_want_eight_replicas() -> None:
    load, obj = Load(), isvc()
    scaler = Autoscaler(load, SHORT, registry=CollectorRegistry())
    load.in_flight = 50
    run(scaler, obj, load, 1, 8.0, 100.0)
    assert scaler.scale(obj) == {REV[1]: 8}  # ceil(50 / 7)
    steps = [c[1:3] for c in scaler.changes]  # up as the windows fill, never down
    assert steps[0][0] == 1 and steps[-1][1] == 8 and all(a < b for a, b in steps), steps
    event = scale_event(*scaler.changes[-1], "2026-01-01T00:00:00Z")
    assert event["involvedObject"]["name"] == REV[1] and event["reason"] == "SuccessfulRescale"
    assert event["message"].startswith(f"New size: 8 (was {steps[-1][0]}); reason: ")
    registry = scaler.gauges.registry
    assert registry.get_sample_value("marserve_autoscaler_desired_replicas",
                                     dict(zip(("namespace", "revision"), REV))) == 8  # fmt: skip


def test_five_in_flight_stay_on_one_and_max_replicas_bounds() -> None:
    load, obj = Load(), isvc(maxReplicas=3)
    scaler = Autoscaler(load, SHORT)
    load.in_flight = 5
    now = run(scaler, obj, load, 1, 8.0, 100.0)
    assert scaler.scale(obj) == {REV[1]: 1}
    load.in_flight = 100
    run(scaler, obj, load, 1, 4.0, now)
    assert scaler.scale(obj) == {REV[1]: 3}


def test_zero_after_grace_and_a_held_request_pokes_back_to_one() -> None:
    load, obj = Load(), isvc(minReplicas=0)
    scaler = Autoscaler(load, SHORT)
    now = run(scaler, obj, load, 1, 14.0, 100.0)
    assert scaler.scale(obj) == {REV[1]: 0}
    load.in_flight = 1  # held by the activator: the revision has no replica
    target = Target("default", "svc", REV[1], obj, 0)
    now += 0.1  # between ticks: the poke decides at once
    assert scaler.sample(now) == [REV]
    assert scaler.decide([target], now, {REV})
    assert scaler.scale(obj) == {REV[1]: 1}


def test_min_replicas_one_never_goes_to_zero() -> None:
    load, obj = Load(), isvc(minReplicas=1)
    scaler = Autoscaler(load, SHORT)
    run(scaler, obj, load, 1, 14.0, 100.0)
    assert scaler.scale(obj) == {REV[1]: 1}


def test_rps_counts_answered_requests_per_second() -> None:
    load, obj = Load(), isvc(scaleMetric="rps", scaleTarget=10)
    scaler = Autoscaler(load, SHORT)
    now = 100.0
    for _ in range(32):  # 40 answered per second, 7 rps per replica (10 x 0.7)
        target = Target("default", "svc", REV[1], obj, 1)
        scaler.track([target], now)
        scaler.sample(now)
        load.requests += 10
        if abs(now - round(now)) < 1e-9:
            scaler.decide([target], now)
        now += 0.25
    assert scaler.scale(obj) == {REV[1]: 6}  # ceil(40 / 7)


def test_a_bad_annotation_leaves_the_revision_to_min_replicas() -> None:
    obj = isvc()
    obj["metadata"]["annotations"]["autoscaling.knative.dev/target"] = "lots"
    scaler = Autoscaler(Load(), SHORT)
    scaler.track([Target("default", "svc", REV[1], obj, 1)], 100.0)
    assert scaler.scale(obj) == {}


def test_gone_revisions_are_forgotten_with_their_series() -> None:
    registry = CollectorRegistry()
    load, obj = Load(), isvc()
    scaler = Autoscaler(load, SHORT, registry=registry)
    run(scaler, obj, load, 1, 2.0, 100.0)
    scaler.track([], 103.0)
    assert scaler.scale(obj) == {}
    labels = dict(zip(("namespace", "revision"), REV))
    assert registry.get_sample_value("marserve_autoscaler_desired_replicas", labels) is None


def test_the_reconciler_takes_counts_per_revision() -> None:
    obj = isvc(minReplicas=0, maxReplicas=4)
    observed = Observed((RevisionView("svc-predictor-00001", "h"),),
                        desired={"svc-predictor-00001": 9})  # fmt: skip
    assert desired_replicas(obj, observed, "svc-predictor-00001") == 4
    assert desired_replicas(obj, observed, "svc-predictor-00002") == 1  # unknown: not yet tracked


def test_an_adopted_revision_keeps_its_replicas_until_the_kpa_has_seen_a_window() -> None:
    load, obj = Load(), isvc()
    scaler = Autoscaler(load, SHORT)
    adopted = Target("default", "svc", REV[1], obj, ready=3, running=3)
    scaler.track([adopted], 100.0)
    assert scaler.scale(obj) == {REV[1]: 3}  # not the initial scale: a restart kills nothing
    scaler.sample(100.0)
    scaler.decide([adopted], 100.0)
    assert scaler.scale(obj) == {REV[1]: 3}  # a restart with > 1 ready starts in panic


def test_the_controller_refuses_a_bad_autoscaler_flag(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from marserve.cli.controller import controller

    runner = CliRunner()
    for flag, words in (("nosuch=1", "unknown key 'nosuch'"), ("stable-window", "not KEY=VALUE"),
                        ("tick=soon", "tick = 'soon' is not a valid value")):  # fmt: skip
        result = runner.invoke(controller, ["--home", str(tmp_path), f"--autoscaler={flag}"])
        assert result.exit_code == 2, result.output
        assert words in result.output, result.output
    assert not (tmp_path / "kubeconfig").exists()  # nothing started
