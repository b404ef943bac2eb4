"""Knative's KPA scaling decision as pure functions: settings, sample windows and ``decide``.

This mirrors Knative Serving's autoscaler (``pkg/autoscaler/scaling/autoscaler.go``, the
per-pod target of ``reconciler/autoscaling/resources/target.go``, the bounds and scale-to-zero
steps of ``reconciler/autoscaling/kpa/scaler.go`` and the Active condition of ``kpa.go``), with
Knative's defaults (``config-autoscaler``) and KServe's mapping of the predictor spec.

How the controller is meant to use it (nothing here does I/O or reads a clock):

0. At start: ``defaults = defaults_from(config_autoscaler_section)`` (``Defaults()`` for
   Knative's own; ValueError names a bad key).
1. When a revision is created: ``settings = settings_from(annotations, predictor_spec,
   defaults)`` (raises :class:`~marserve.controlplane.errors.Invalid` with Knative's message for
   a bad annotation), start ``initial_replicas(settings)`` replicas, and keep
   ``state = new_state(settings, now, ready)`` and ``samples = Samples(settings)``.
2. Every second, per revision: ``samples.record(now, value)`` with the revision's average
   in-flight requests over that second summed over its replicas and the activator queue (metric
   ``concurrency``) or its requests in that second (``rps``). Records in one second add up.
3. Every ``defaults.tick`` (2 s), and at once when a request reaches a revision at zero (the
   activator's poke): ``decision = decide(state, samples, now, ready, reachable)``; keep
   ``decision.state``; if ``decision.desired`` is not ``None`` scale to it (``None`` means leave
   the replica count alone). ``decision.activator`` says whether requests should go through the
   activator queue (proxy mode), ``decision.panic``, ``decision.reason``,
   ``decision.stable_value``/``panic_value`` and ``decision.active`` are for logs, metrics and
   Events.

``reachable`` is False for a revision that no route sends traffic to (it may then go to zero
whatever its ``minReplicas``). Times are seconds on any monotonic clock. The settings half lives
in :mod:`marserve.controlplane.autoscaler_settings` and is re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from marserve.controlplane.autoscaler_settings import (
    PREFIX,
    Defaults,
    Settings,
    defaults_from,
    go_duration,
    initial_replicas,
    parse_duration,
    settings_from,
)

__all__ = [
    "ACTIVATING",
    "ACTIVE",
    "INACTIVE",
    "PREFIX",
    "Buckets",
    "Decision",
    "Defaults",
    "Samples",
    "Settings",
    "State",
    "decide",
    "defaults_from",
    "go_duration",
    "initial_replicas",
    "new_state",
    "parse_duration",
    "settings_from",
]

ACTIVE, INACTIVE, ACTIVATING = "Active", "Inactive", "Activating"


# Samples -------------------------------------------------------------------------------------
@dataclass
class Buckets:
    """Knative's ``TimedFloat64Buckets``: per-second sums over a window, averaged the same way.

    The average covers the seconds since the first record when that is less than the window,
    and stops at the last record when records stopped less than a window ago; seconds without a
    record inside that span count as 0. A gap of a whole window starts afresh.
    """

    window: int  # seconds
    values: dict[int, float] = field(default_factory=dict)
    first: int | None = None
    last: int | None = None

    def record(self, now: float, value: float) -> None:
        second = math.floor(now)
        if self.last is None or second - self.last >= self.window:
            self.values.clear()
            self.first = self.last = second
        elif second < self.last - self.window:
            return  # older than anything the window still holds
        self.last = max(self.last, second)
        self.first = second if self.first is None else min(self.first, second)
        self.values[second] = self.values.get(second, 0.0) + value
        for old in [s for s in self.values if s <= self.last - self.window]:
            del self.values[old]

    def is_empty(self, now: float) -> bool:
        return self.last is None or math.floor(now) - self.last > self.window

    def average(self, now: float) -> float:
        if self.last is None or self.first is None:
            return 0.0
        second = math.floor(now)
        idle = max(0, second - self.last)
        if idle >= self.window:
            return 0.0
        top = min(second, self.last)
        total = sum(v for s, v in self.values.items() if second - self.window < s <= top)
        return total / min(self.last - self.first + 1, self.window - idle)


class Samples:
    """One revision's observations of its metric, kept over the stable and the panic window."""

    def __init__(self, settings: Settings) -> None:
        self.stable = Buckets(int(settings.stable_window))
        self.panic = Buckets(int(settings.panic_window))

    def record(self, now: float, value: float) -> None:
        """Add one observation (in-flight requests, or requests in the second for rps)."""
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"an observation must be a finite number >= 0, got {value}")
        self.stable.record(now, value)
        self.panic.record(now, value)

    def stable_and_panic(self, now: float) -> tuple[float, float] | None:
        """The two window averages, or None when nothing was recorded within the stable window."""
        if self.stable.is_empty(now):
            return None
        return self.stable.average(now), self.panic.average(now)


# Decision ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class State:
    """What one revision's autoscaler remembers between ticks (Knative's autoscaler and PA)."""

    settings: Settings
    panic_since: float | None = None  # the last time the panic threshold was crossed
    max_panic_pods: int = 0
    desired: int = -1  # the decider's last valid result; -1 = no metrics yet
    excess_burst_capacity: float = -1.0
    delayed: tuple[tuple[int, int], ...] = ()  # scale-down-delay: (tick index, desired)
    active: str = ACTIVATING
    active_since: float = 0.0
    initialized: bool = False  # reached its initial scale once
    proxy_since: float | None = None  # since when the activator is in the path


@dataclass(frozen=True)
class Decision:
    """One tick's outcome: scale to ``desired`` (None: leave the count alone), and why."""

    desired: int | None
    panic: bool
    reason: str
    stable_value: float | None
    panic_value: float | None
    excess_burst_capacity: float
    activator: bool  # requests go through the activator's queue (no replica, or no headroom)
    active: str
    state: State


def new_state(settings: Settings, now: float, ready: int = 0) -> State:
    """A fresh autoscaler: panicking when it finds more than one replica ready (a restart must not
    scale down before it has seen a window of data), activating until a replica is ready."""
    panicking = ready > 1
    return State(
        settings,
        panic_since=now if panicking else None,
        max_panic_pods=ready if panicking else 0,
        excess_burst_capacity=0.0 if settings.target_burst_capacity == 0 else -1.0,
        active=ACTIVATING,
        active_since=now,
        proxy_since=now,
    )


@dataclass(frozen=True)
class _Kpa:
    desired: int
    stable: float
    panic: float
    ebc: float
    note: str


def _kpa(
    state: State, samples: Samples, now: float, ready: int, reachable: bool
) -> tuple[_Kpa | None, State]:
    """Knative's ``autoscaler.Scale``: replicas for the metric, rate limited, with panic mode."""
    s = state.settings
    values = samples.stable_and_panic(now)
    if values is None:
        return None, state
    stable, panic = values
    pods = float(max(1, ready))
    max_up = math.ceil(s.max_scale_up_rate * pods)
    max_down = math.floor(pods / s.max_scale_down_rate) if reachable else 0
    dspc, dppc = math.ceil(stable / s.target), math.ceil(panic / s.target)
    want_stable = int(min(max(dspc, max_down), max_up))
    want_panic = int(min(max(dppc, max_down), max_up))
    if s.activation_scale > 1:
        want_stable = max(want_stable, s.activation_scale) if dspc > 0 else want_stable
        want_panic = max(want_panic, s.activation_scale) if dppc > 0 else want_panic
    over = dppc / pods >= s.panic_threshold
    since, max_panic = state.panic_since, state.max_panic_pods
    if over:
        since = now
    elif since is not None and since + s.stable_window < now:
        since, max_panic = None, 0
    desired = want_stable
    note = f"stable {stable:.2f} / {s.target:.2f} per replica -> {dspc}"
    if since is not None:
        max_panic = max(max_panic, want_stable, want_panic)
        desired = max_panic
        note = f"panic {panic:.2f} / {s.target:.2f} per replica -> {dppc} (never down in panic)"
    desired, delayed = _delay(state, now, desired)
    ebc = -1.0
    if s.target_burst_capacity == 0:
        ebc = 0.0
    elif s.target_burst_capacity > 0:
        ebc = float(math.floor(ready * s.total - s.target_burst_capacity - panic))
    result = _Kpa(desired, stable, panic, ebc, note)
    return result, replace(
        state,
        panic_since=since,
        max_panic_pods=max_panic,
        desired=desired,
        excess_burst_capacity=ebc,
        delayed=delayed,
    )


def _delay(state: State, now: float, desired: int) -> tuple[int, tuple[tuple[int, int], ...]]:
    """``scale-down-delay``: the largest desired count of the last delay window."""
    s = state.settings
    if s.scale_down_delay <= 0:
        return desired, ()
    tick = math.floor(now / s.tick)
    span = math.ceil(s.scale_down_delay / s.tick)
    kept = [(t, v) for t, v in state.delayed if tick - span < t < tick]
    merged = max([desired] + [v for t, v in state.delayed if t == tick])
    kept.append((tick, merged))
    return max(v for _, v in kept), tuple(kept)


def _bounds_and_zero(
    state: State, desired: int, now: float, reachable: bool
) -> tuple[int | None, int, str]:
    """Knative's ``scaler.scale``: (replicas to apply or None, the ``want`` seen by the PA, why)."""
    s = state.settings
    if desired < 0 and state.active != ACTIVATING:
        return None, -1, "no metrics yet"
    low = s.min_scale if reachable else 0
    if s.initial_scale > 1 and not state.initialized:
        low = max(low, s.initial_scale)
    bounded = max(desired, low)
    if s.max_scale and bounded > s.max_scale:
        bounded = s.max_scale
    note = "" if bounded == desired else f"; bounded to [{low}, {s.max_scale or 'inf'}]"
    if bounded != 0:
        return bounded, bounded, note
    return _to_zero(state, now, note)


def _to_zero(state: State, now: float, note: str) -> tuple[int | None, int, str]:
    """Knative's ``handleScaleToZero``: when desired is 0, go there only once idle long enough."""
    s = state.settings
    if not s.enable_scale_to_zero:
        return 1, 1, note + "; scale to zero is disabled"
    since = now - state.active_since
    if state.active == ACTIVATING:
        if since >= s.activation_timeout:
            return 0, 0, note + f"; activation timed out after {go_duration(since)}"
        return None, -1, note + "; activating"
    if state.active == ACTIVE:
        if since >= s.stable_window:
            return None, 0, note + "; idle for a stable window: deactivating"
        return 1, 1, note + f"; idle, zero allowed in {go_duration(s.stable_window - since)}"
    wait = max(s.scale_to_zero_grace_period, s.pod_retention)
    if since >= wait:
        return 0, 0, note + f"; inactive for {go_duration(since)}: scale to zero"
    proxied = now - state.proxy_since if state.proxy_since is not None else 0.0
    if proxied >= s.scale_to_zero_grace_period and since >= s.pod_retention:
        return 0, 0, note + f"; activator in the path for {go_duration(proxied)}: scale to zero"
    return None, 0, note + "; waiting out the scale-to-zero grace period"


def _activity(state: State, want: int, ready: int, reachable: bool) -> tuple[str, bool]:
    """Knative's ``computeActiveCondition``: the PA's Active condition and initialized flag."""
    s = state.settings
    low = s.min_scale if reachable else 0
    threshold = max(low, s.initial_scale) if not state.initialized else max(low, 1)
    initialized = state.initialized or ready >= threshold
    if want == 0 or threshold == 0:
        return INACTIVE, initialized
    if ready < threshold:
        return (ACTIVATING if want > 0 or state.active != INACTIVE else INACTIVE), initialized
    return (ACTIVE if want > 0 or state.active != INACTIVE else state.active), initialized


def decide(
    state: State, samples: Samples, now: float, ready: int, reachable: bool = True
) -> Decision:
    """One 2 s tick for one revision: Knative's decider, then its bounds and scale to zero."""
    if ready < 0:
        raise ValueError(f"ready replicas must be >= 0, got {ready}")
    kpa, state = _kpa(state, samples, now, ready, reachable)
    desired = kpa.desired if kpa is not None else state.desired
    apply, want, note = _bounds_and_zero(state, desired, now, reachable)
    proxy = (
        want == 0 or state.excess_burst_capacity < 0 or (want == -1 and state.active == INACTIVE)
    )
    active, initialized = _activity(state, want, ready, reachable)
    state = replace(
        state,
        active=active,
        active_since=state.active_since if active == state.active else now,
        initialized=initialized,
        proxy_since=(state.proxy_since if state.proxy_since is not None else now)
        if proxy
        else None,
    )
    reason = (kpa.note if kpa is not None else "no data in the stable window") + note
    return Decision(
        desired=apply,
        panic=state.panic_since is not None,
        reason=reason,
        stable_value=kpa.stable if kpa is not None else None,
        panic_value=kpa.panic if kpa is not None else None,
        excess_burst_capacity=state.excess_burst_capacity,
        activator=proxy,
        active=active,
        state=state,
    )
