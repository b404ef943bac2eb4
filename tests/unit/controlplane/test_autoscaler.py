"""The KPA decision against Knative's numbers: per-replica targets, panic, rate limits, zero."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import pytest

from marserve.controlplane import autoscaler as kpa
from marserve.controlplane.errors import Invalid

SEED = {"autoscaling.knative.dev/target": "10"}  # the seeds' autoscaling sample


def settings(
    annotations: Mapping[str, str] | None = None,
    spec: Mapping[str, Any] | None = None,
    **defaults: Any,
) -> kpa.Settings:
    notes = {k if "/" in k else kpa.PREFIX + k: v for k, v in (annotations or {}).items()}
    return kpa.settings_from(notes, spec or {}, kpa.Defaults(**defaults))


@dataclass
class Run:
    """A revision under a load: one observation a second, a decision every 2 s.

    Replicas become ready ``lag`` ticks after they are asked for (0: at once).
    """

    settings: kpa.Settings
    ready: int = 1
    lag: int = 0
    now: float = 0.0
    samples: kpa.Samples = field(init=False)
    state: kpa.State = field(init=False)
    log: list[tuple[float, int, bool, kpa.Decision]] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.samples = kpa.Samples(self.settings)
        self.state = kpa.new_state(self.settings, self.now, self.ready)

    def advance(self, seconds: float, load: float | Callable[[float], float]) -> kpa.Decision:
        decision = None
        for _ in range(round(seconds)):
            self.now += 1
            value = load(self.now) if callable(load) else load
            self.samples.record(self.now - 0.5, value)
            if self.now % 2 == 0:
                decision = self.tick()
        assert decision is not None
        return decision

    def tick(self) -> kpa.Decision:
        decision = kpa.decide(self.state, self.samples, self.now, self.ready)
        self.state = decision.state
        if decision.desired is not None:
            self.pending.append(decision.desired)
        if len(self.pending) > self.lag:
            self.ready = self.pending[-1 - self.lag] if self.lag else self.pending[-1]
            self.pending = self.pending[-self.lag :] if self.lag else []
        self.log.append((self.now, self.ready, decision.panic, decision))
        return decision

    def replicas(self) -> list[int]:
        return [ready for _, ready, _, _ in self.log]


# Per-replica target (target.go) --------------------------------------------------------------
@pytest.mark.parametrize(
    ("annotations", "spec", "target", "total"),
    [
        ({}, {}, 70.0, 100.0),  # container-concurrency-target-default 100 x 70 %
        (SEED, {}, 7.0, 10.0),  # the seeds' target "10" -> 7 per replica
        ({}, {"containerConcurrency": 10}, 7.0, 10.0),  # containerConcurrency as the target
        (SEED, {"containerConcurrency": 5}, 3.5, 5.0),  # min(target, containerConcurrency)
        ({}, {"scaleTarget": 1, "scaleMetric": "concurrency"}, 0.7, 1.0),  # KServe's doc example
        (SEED, {"scaleTarget": 20}, 14.0, 20.0),  # scaleTarget replaces the annotation
        ({**SEED, "target-utilization-percentage": "50"}, {}, 5.0, 10.0),
        ({}, {"scaleMetric": "rps"}, 140.0, 200.0),  # requests-per-second-target-default 200
        ({"metric": "rps", "target": "10"}, {"containerConcurrency": 2}, 7.0, 10.0),
        ({"target": "0.01"}, {}, 0.01, 0.01),  # never below TargetMin
    ],
)
def test_per_replica_target(
    annotations: dict[str, str], spec: dict[str, Any], target: float, total: float
) -> None:
    s = settings(annotations, spec)
    assert s.target == pytest.approx(target) and s.total == pytest.approx(total)


def test_defaults_are_knatives() -> None:
    s = settings()
    assert (s.stable_window, s.panic_window, s.panic_threshold) == (60.0, 6.0, 2.0)
    assert (s.max_scale_up_rate, s.max_scale_down_rate) == (1000.0, 2.0)
    assert (s.target_burst_capacity, s.scale_to_zero_grace_period, s.pod_retention) == (
        211.0,
        30.0,
        0.0,
    )
    assert (s.min_scale, s.max_scale, s.initial_scale, s.metric) == (1, 0, 1, "concurrency")
    assert kpa.initial_replicas(s) == 1


def test_annotations_override_windows_and_bounds_come_from_replicas() -> None:
    s = settings(
        {
            "window": "2m",
            "panic-window-percentage": "5",
            "panic-threshold-percentage": "150",
            "scale-down-delay": "10s",
            "scale-to-zero-pod-retention-period": "1m30s",
            "initial-scale": "3",
            "target-burst-capacity": "-1",
            "min-scale": "7",  # KServe strips it: minReplicas wins
        },
        {"minReplicas": 0, "maxReplicas": 5},
    )
    assert (s.stable_window, s.panic_window, s.panic_threshold) == (120.0, 6.0, 1.5)
    assert (s.scale_down_delay, s.pod_retention, s.target_burst_capacity) == (10.0, 90.0, -1.0)
    assert (s.min_scale, s.max_scale, s.initial_scale) == (0, 5, 3)
    assert kpa.initial_replicas(s) == 3


@pytest.mark.parametrize(
    ("annotations", "spec", "message"),
    [
        (
            {"target": "abc"},
            {},
            "invalid value: abc: metadata.annotations.autoscaling.knative.dev/target",
        ),
        (
            {"target": "0"},
            {},
            "invalid value: 0: metadata.annotations.autoscaling.knative.dev/target",
        ),
        (
            {"window": "2s"},
            {},
            "expected 6s <= 2s <= 1h0m0s: metadata.annotations.autoscaling.knative.dev/window",
        ),
        ({"window": "2h"}, {}, "expected 6s <= 2h0m0s <= 1h0m0s"),
        ({"window": "6.5s"}, {}, "must be specified with at most second precision"),
        (
            {"window": "sixty"},
            {},
            "invalid value: sixty: metadata.annotations.autoscaling.knative.dev/window",
        ),
        ({"panic-threshold-percentage": "100"}, {}, "expected 110 <= 100 <= 1000"),
        ({"panic-window-percentage": "0"}, {}, "expected 1 <= 0 <= 100"),
        ({"target-utilization-percentage": "120"}, {}, "expected 1 <= 120 <= 100"),
        ({"target-burst-capacity": "-2"}, {}, "invalid value: -2"),
        ({"scale-down-delay": "-1s"}, {}, "expected 0s <= -1s <= 1h0m0s"),
        ({"initial-scale": "-1"}, {}, "invalid value: -1"),
        ({"activation-scale": "0"}, {}, "invalid value: 0"),
        (
            {"metric": "cpu"},
            {},
            "invalid value: cpu: metadata.annotations.autoscaling.knative.dev/metric",
        ),
        ({}, {"scaleMetric": "memory"}, "invalid value: memory"),
        (
            {"class": "hpa.autoscaling.knative.dev"},
            {},
            "marserve's local autoscaler is Knative's KPA",
        ),
        (
            {"metric-aggregation-algorithm": "weightedExponential"},
            {},
            "invalid value: weightedExponential",
        ),
        ({}, {"minReplicas": -1}, "MinReplicas cannot be less than 0"),
        ({}, {"maxReplicas": -1}, "MaxReplicas cannot be less than 0"),
        (
            {},
            {"minReplicas": 3, "maxReplicas": 2},
            "MinReplicas cannot be greater than MaxReplicas",
        ),
        ({}, {"containerConcurrency": "10"}, "containerConcurrency must be an integer"),
    ],
)
def test_bad_settings_get_knative_and_kserve_messages(
    annotations: dict[str, str], spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(Invalid) as caught:
        settings(annotations, spec)
    assert message in caught.value.message
    assert caught.value.code == 422 and caught.value.field


@pytest.mark.parametrize(("value", "initial"), [("x", 1), ("0", 1), ("2", 2)])
def test_kserve_drops_an_initial_scale_it_would_not_pass_on(value: str, initial: int) -> None:
    assert settings({"initial-scale": value}).initial_scale == initial


def test_zero_initial_scale_when_allowed() -> None:
    s = settings({"initial-scale": "0"}, {"minReplicas": 0}, allow_zero_initial_scale=True)
    assert s.initial_scale == 0 and kpa.initial_replicas(s) == 0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60s", 60.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("0", 0.0), ("1.5s", 1.5)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert kpa.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "60", "s", "1x", "1m 30s", "--1s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        kpa.parse_duration(text)


def test_go_duration_printing() -> None:
    assert [kpa.go_duration(x) for x in (6, 3600, 90, 0.5, 0)] == [
        "6s",
        "1h0m0s",
        "1m30s",
        "0.5s",
        "0s",
    ]


# Windows (bucketing.go) ----------------------------------------------------------------------
def test_window_average_covers_only_seconds_since_the_first_record() -> None:
    buckets = kpa.Buckets(60)
    for second in range(10):
        buckets.record(second + 0.2, 5.0)
    assert buckets.average(9.9) == pytest.approx(5.0)  # 10 s of data, not 60


def test_window_average_counts_missing_seconds_as_zero_and_stops_at_the_last_record() -> None:
    buckets = kpa.Buckets(6)
    for second in (0, 1, 3):  # second 2 missing -> 0
        buckets.record(second, 6.0)
    assert buckets.average(3) == pytest.approx(18 / 4)
    # Records stopped 2 s ago: the window shrinks by those seconds (Knative's partial window).
    assert buckets.average(5) == pytest.approx(18 / 4)
    assert buckets.average(6) == pytest.approx(12 / 3)
    assert buckets.average(9) == 0.0 and not buckets.is_empty(9)
    assert buckets.is_empty(10)


def test_a_gap_of_a_whole_window_starts_afresh() -> None:
    buckets = kpa.Buckets(6)
    buckets.record(0, 100.0)
    buckets.record(6, 3.0)
    assert buckets.average(6) == pytest.approx(3.0)


def test_records_in_one_second_add_up_and_bad_values_are_refused() -> None:
    samples = kpa.Samples(settings())
    samples.record(10.1, 2.0)
    samples.record(10.7, 3.0)
    averages = samples.stable_and_panic(10.9)
    assert averages is not None and averages == pytest.approx((5.0, 5.0))
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite number >= 0"):
            samples.record(11, bad)


# The seeds' load: target "10", hey -c 5 and -c 50 --------------------------------------------
def idle_run(s: kpa.Settings, ready: int = 1, idle: float = 120, **kw: Any) -> Run:
    run = Run(s, ready=ready, **kw)
    run.advance(idle, 0.0)
    return run


def test_hey_c5_stays_on_one_replica() -> None:
    run = idle_run(settings(SEED))
    run.advance(30, 5.0)
    assert set(run.replicas()) == {1}
    assert not any(panic for _, _, panic, _ in run.log)


def test_hey_c50_goes_to_eight_replicas_through_panic() -> None:
    run = idle_run(settings(SEED))
    first = run.advance(2, 50.0)
    assert first.panic and first.desired is not None and first.desired > 1
    run.advance(28, 50.0)
    replicas = run.replicas()[-15:]
    assert max(replicas) == 8 == replicas[-1]  # ceil(50 / 7) = 8, reached in the panic window
    assert replicas.index(8) <= 3
    assert replicas == sorted(replicas)  # up only while panicking


def test_hey_c50_with_slow_replicas_still_settles_at_eight() -> None:
    run = idle_run(settings(SEED), lag=2)
    run.advance(40, 50.0)
    assert run.replicas()[-1] == 8


def test_panic_holds_for_a_stable_window_then_halves_per_tick() -> None:
    run = idle_run(settings(SEED))
    run.advance(30, 50.0)
    over_until = max(
        t for t, _, _, d in run.log if d.panic_value and d.panic_value / 7 / 1 >= 2 * 1
    )
    run.advance(120, 0.0)
    after = [(t, ready, panic) for t, ready, panic, _ in run.log if t > 120 + 30]
    in_panic = [t for t, _, panic in after if panic]
    assert in_panic and max(in_panic) <= over_until + 60 + 2
    replicas = [ready for _, ready, _ in after]
    assert replicas[0] == 8 and replicas[-1] == 1  # minReplicas 1
    for before, now in pairwise(replicas):
        assert now >= before // 2  # max-scale-down-rate 2: at most half per tick


def test_panic_exit_needs_a_stable_window_below_the_threshold() -> None:
    run = idle_run(settings(SEED))
    run.advance(6, 50.0)
    last_over = run.state.panic_since
    assert run.log[-1][2] and last_over is not None and run.ready == 8
    # 8 concurrent on 8 replicas is under 200 %: panic ends a stable window after the last
    # tick over the threshold, not before.
    run.advance(last_over + 60 - run.now, 8.0)
    assert run.state.panic_since == last_over and run.log[-1][2]
    run.advance(2, 8.0)
    assert run.state.panic_since is None and not run.log[-1][2]
    assert run.replicas()[-1] == 4  # out of panic: ceil(8 / 7) = 2, halved per tick from 8


def test_scale_up_is_limited_by_max_scale_up_rate() -> None:
    run = idle_run(settings(SEED, max_scale_up_rate=2.0))
    run.advance(10, 50.0)
    assert run.replicas()[-5:] == [2, 4, 8, 8, 8]


def test_scale_down_is_at_most_half_per_tick() -> None:
    s = settings(SEED)
    state = kpa.new_state(s, 0.0, ready=1)  # not panicking
    samples = kpa.Samples(s)
    ready, seen = 16, []
    for now in range(2, 12, 2):
        samples.record(now - 0.5, 0.0)
        decision = kpa.decide(state, samples, now, ready)
        state, ready = decision.state, decision.desired or ready
        seen.append(ready)
    assert seen == [8, 4, 2, 1, 1]  # floor(ready / max-scale-down-rate 2), then minReplicas


def test_max_replicas_caps_and_min_replicas_floors() -> None:
    run = idle_run(settings(SEED, {"minReplicas": 2, "maxReplicas": 3}), ready=2)
    assert run.ready == 2  # no load: minReplicas holds
    decision = run.advance(20, 50.0)
    assert run.ready == 3 and "bounded to [2, 3]" in decision.reason


def test_rps_metric() -> None:
    run = idle_run(settings({"metric": "rps", "target": "10"}))
    run.advance(90, 70.0)  # 70 rps at 7 rps per replica
    assert run.ready == 10


def test_a_restarted_autoscaler_keeps_its_replicas_until_it_has_data() -> None:
    s = settings(SEED)
    run = Run(s, ready=5)
    first = run.advance(2, 0.0)
    assert first.panic and first.desired == 5
    run.advance(58, 0.0)
    assert run.ready == 5
    run.advance(10, 0.0)
    assert run.ready < 5


def test_no_data_leaves_the_replicas_alone() -> None:
    s = settings(SEED)
    state = kpa.new_state(s, 0.0, ready=1)
    activating = kpa.decide(state, kpa.Samples(s), 2.0, ready=1)
    assert activating.desired == 1  # while activating Knative applies the bounds anyway
    decision = kpa.decide(activating.state, kpa.Samples(s), 4.0, ready=1)
    assert decision.desired is None and decision.stable_value is None
    assert decision.reason.startswith("no data")
    assert decision.active == kpa.ACTIVE


def test_initial_scale_holds_until_reached_once() -> None:
    s = settings({**SEED, "initial-scale": "3"}, {"minReplicas": 1})
    run = Run(s, ready=0, lag=1)
    run.advance(4, 0.0)
    assert run.ready == 3
    run.advance(80, 0.0)
    assert run.ready == 1


def test_scale_down_delay_keeps_the_peak() -> None:
    run = idle_run(settings({**SEED, "scale-down-delay": "20s"}))
    run.advance(30, 14.0)  # 2 replicas, no panic
    assert run.ready == 2
    run.advance(90, 0.0)
    down = next(t for t, ready, _, _ in run.log if t > 150 and ready == 1)
    quiet = next(
        t for t, _, _, d in run.log if t > 150 and d.stable_value is not None and d.stable_value < 7
    )
    assert down - quiet >= 20 - 2


def test_excess_burst_capacity_puts_the_activator_in_the_path() -> None:
    run = idle_run(settings(SEED))
    decision = run.log[-1][3]
    assert decision.excess_burst_capacity == -201  # floor(1 x 10 - 211 - 0)
    assert decision.activator
    roomy = idle_run(settings(SEED, target_burst_capacity=0))
    assert not roomy.log[-1][3].activator


# Scale to zero and back ----------------------------------------------------------------------
def zero_time(s: kpa.Settings) -> float:
    run = Run(s, ready=1)
    run.advance(30, 5.0)
    stopped = run.now
    run.advance(200, 0.0)
    return next(t for t, ready, _, _ in run.log if ready == 0) - stopped


def test_scale_to_zero_after_the_stable_window_with_the_activator_in_the_path() -> None:
    # Default burst capacity keeps the activator in the path, so the grace period is already
    # served when the revision goes inactive: the last replica goes about a window after traffic.
    delay = zero_time(settings(SEED, {"minReplicas": 0}))
    assert 60 <= delay <= 66


def test_scale_to_zero_waits_the_grace_period_when_the_activator_was_out() -> None:
    delay = zero_time(settings({**SEED, "target-burst-capacity": "0"}, {"minReplicas": 0}))
    assert 90 <= delay <= 96


def test_pod_retention_period_delays_zero() -> None:
    notes = {**SEED, "scale-to-zero-pod-retention-period": "50s"}
    delay = zero_time(settings(notes, {"minReplicas": 0}))
    assert 110 <= delay <= 116


def test_no_zero_with_min_replicas_one_or_scale_to_zero_disabled() -> None:
    with pytest.raises(StopIteration):
        zero_time(settings(SEED))
    with pytest.raises(StopIteration):
        zero_time(settings(SEED, {"minReplicas": 0}, enable_scale_to_zero=False))


def test_scale_from_zero_on_the_activators_poke() -> None:
    s = settings(SEED, {"minReplicas": 0})
    run = Run(s, ready=1)
    run.advance(30, 5.0)
    run.advance(100, 0.0)
    assert run.ready == 0 and run.log[-1][3].active == kpa.INACTIVE and run.log[-1][3].activator
    run.now += 1  # between two ticks
    run.samples.record(run.now - 0.5, 1.0)  # one request held by the activator
    poke = run.tick()
    assert poke.desired == 1 and poke.activator and poke.active == kpa.ACTIVATING
    run.advance(3, 1.0)
    assert run.log[-1][3].active == kpa.ACTIVE


@pytest.mark.parametrize(("reachable", "desired"), [(False, [None, None, 0]), (True, [2, 2, 2])])
def test_an_unreachable_revision_skips_min_replicas_and_the_halving(
    reachable: bool, desired: list[int | None]
) -> None:
    s = settings(SEED)  # minReplicas 1 does not hold once no route sends traffic
    state = kpa.new_state(s, 0.0, ready=1)
    samples = kpa.Samples(s)
    for second in range(100):
        samples.record(second, 0.0)
    got = []
    for now in (70.0, 140.0, 142.0):
        decision = kpa.decide(state, samples, now, ready=4, reachable=reachable)
        got.append(decision.desired)
        state = decision.state
    assert got == desired


def test_activation_that_never_succeeds_times_out_to_zero() -> None:
    s = settings(SEED, {"minReplicas": 0})
    state = kpa.new_state(s, 0.0)
    samples = kpa.Samples(s)
    samples.record(599.0, 0.0)
    assert kpa.decide(state, samples, 600.0, ready=0).desired is None
    samples.record(640.0, 0.0)
    timed_out = kpa.decide(state, samples, 640.0, ready=0)
    assert timed_out.desired == 0 and "activation timed out" in timed_out.reason


def test_negative_ready_is_refused() -> None:
    s = settings()
    with pytest.raises(ValueError, match="ready replicas"):
        kpa.decide(kpa.new_state(s, 0.0), kpa.Samples(s), 2.0, ready=-1)


# config-autoscaler ---------------------------------------------------------------------------
def test_config_autoscaler_keys_replace_the_defaults() -> None:
    d = kpa.defaults_from(
        {
            "stable-window": "4s",
            "scale-to-zero-grace-period": "2s",
            "enable-scale-to-zero": "true",
            "container-concurrency-target-percentage": "50",
            "initial-scale": "2",
        }
    )
    assert (d.stable_window, d.scale_to_zero_grace_period, d.initial_scale) == (4.0, 2.0, 2)
    assert d.container_concurrency_target_percentage == 50.0 and d.max_scale_up_rate == 1000.0
    s = kpa.settings_from(SEED, {"minReplicas": 0}, d)
    assert (s.target, s.stable_window, s.panic_window) == (5.0, 4.0, 1.0)


def test_short_windows_scale_to_zero_in_seconds() -> None:
    d = kpa.defaults_from({"stable-window": "4s", "scale-to-zero-grace-period": "2s"})
    delay = zero_time(kpa.settings_from(SEED, {"minReplicas": 0}, d))
    assert 4 <= delay <= 8


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"stable-windw": "6s"}, "unknown key 'stable-windw'"),
        ({"stable-window": "soon"}, "stable-window = 'soon' is not a valid value"),
        ({"stable-window": "1.5s"}, "stable-window must be a positive number of whole seconds"),
        ({"max-scale-up-rate": "1"}, "max-scale-up-rate must be greater than 1.0"),
        ({"max-scale-down-rate": "nan"}, "max-scale-down-rate = 'nan' is not a valid value"),
        ({"enable-scale-to-zero": "yes"}, "enable-scale-to-zero = 'yes' is not a valid value"),
        (
            {"panic-threshold-percentage": "100"},
            "panic-threshold-percentage must be in [110, 1000]",
        ),
        ({"initial-scale": "0"}, "initial-scale must be at least 0"),
        (
            {"target-burst-capacity": "-5"},
            "target-burst-capacity must be either non-negative or -1",
        ),
    ],
)
def test_bad_config_autoscaler_values(config: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        kpa.defaults_from(config)
    assert message in str(caught.value)


def test_activation_scale_is_the_fewest_replicas_under_any_traffic() -> None:
    s = settings({**SEED, "activation-scale": "3"}, {"minReplicas": 0})
    run = Run(s, ready=1)
    run.advance(30, 1.0)
    assert run.ready == 3  # 1 concurrent wants 1 replica, activation-scale asks for 3
    run.advance(200, 0.0)
    assert run.ready == 0


def test_a_late_record_within_the_window_still_counts() -> None:
    buckets = kpa.Buckets(6)
    buckets.record(10, 6.0)
    buckets.record(8, 6.0)  # arrives late, still inside the window
    buckets.record(1, 100.0)  # older than the window: dropped
    assert buckets.average(10) == pytest.approx(12 / 3)
