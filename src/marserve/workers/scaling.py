"""Per-model worker autoscaling: a pure decision with hysteresis, between min and max workers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ScalePolicy:
    """When to add or remove a worker. Times are seconds."""

    tick_s: float = 0.5  # how often the pool samples its load
    up_after_s: float = 1.0  # saturated (queue waiting, every worker busy) this long -> +1
    down_after_s: float = 30.0  # at least one worker idle this long -> -1
    cooldown_s: float = 5.0  # no two decisions closer than this


@dataclass(frozen=True, slots=True)
class Load:
    """One sample of a pool's load."""

    queued: int  # requests waiting for a worker
    busy: int  # workers running a batch
    live: int  # workers able to run a batch


@dataclass(frozen=True, slots=True)
class ScaleState:
    """What the decision remembers between samples."""

    target: int
    saturated_since: float | None = None
    idle_since: float | None = None
    last_change: float = float("-inf")


def decide(
    state: ScaleState, load: Load, now: float, minimum: int, maximum: int, policy: ScalePolicy
) -> ScaleState:
    """The next state: ``target`` moves by at most one worker, only after sustained load."""
    target = min(max(state.target, minimum), maximum)
    saturated = load.queued > 0 and load.busy >= load.live
    idle = load.queued == 0 and load.busy < load.live
    saturated_since = (
        (state.saturated_since if state.saturated_since is not None else now)
        if (saturated)
        else None
    )
    idle_since = (state.idle_since if state.idle_since is not None else now) if idle else None
    cooled = now - state.last_change >= policy.cooldown_s
    if target != state.target:
        return ScaleState(target, None, None, now)
    if (
        cooled
        and saturated_since is not None
        and now - saturated_since >= policy.up_after_s
        and target < maximum
        and load.live >= target  # do not pile up while workers are still starting
    ):
        return ScaleState(target + 1, None, None, now)
    if (
        cooled
        and idle_since is not None
        and now - idle_since >= policy.down_after_s
        and (target > minimum)
    ):
        return ScaleState(target - 1, None, None, now)
    return ScaleState(target, saturated_since, idle_since, state.last_change)
