"""The worker autoscaling decision, table-driven over sustained and brief load."""

from __future__ import annotations

import itertools

import pytest

from marserve.workers.scaling import Load, ScalePolicy, ScaleState, decide

POLICY = ScalePolicy(tick_s=0.5, up_after_s=1.0, down_after_s=30.0, cooldown_s=5.0)
BUSY = Load(queued=5, busy=2, live=2)
IDLE = Load(queued=0, busy=0, live=2)
STEADY = Load(queued=0, busy=2, live=2)


def run(samples: list[tuple[float, Load]], target: int = 2, lo: int = 1, hi: int = 4) -> list[int]:
    state = ScaleState(target)
    targets = []
    for now, load in samples:
        state = decide(state, load, now, lo, hi, POLICY)
        targets.append(state.target)
    return targets


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([(0.0, BUSY), (0.5, BUSY), (1.0, BUSY)], [2, 2, 3]),  # sustained saturation -> +1
        ([(0.0, BUSY), (0.5, STEADY), (1.0, BUSY)], [2, 2, 2]),  # a blip is not a trend
        ([(0.0, IDLE), (29.0, IDLE), (30.0, IDLE)], [2, 2, 1]),  # long idle -> -1
        ([(0.0, IDLE), (20.0, STEADY), (30.0, IDLE)], [2, 2, 2]),  # idle interrupted
    ],
)
def test_hysteresis(samples: list[tuple[float, Load]], expected: list[int]) -> None:
    assert run(samples) == expected


def test_cooldown_separates_decisions() -> None:
    samples = [(t * 0.5, BUSY) for t in range(0, 30)]
    targets = run(samples, hi=10)
    changes = [samples[i][0] for i in range(1, len(targets)) if targets[i] != targets[i - 1]]
    assert changes and all(b - a >= POLICY.cooldown_s for a, b in itertools.pairwise(changes))


def test_never_leaves_the_bounds() -> None:
    assert run([(t * 10.0, BUSY) for t in range(20)], target=4, hi=4)[-1] == 4
    assert run([(t * 40.0, IDLE) for t in range(20)], target=1, lo=1)[-1] == 1


def test_bounds_changed_by_the_api_clamp_the_target_at_once() -> None:
    assert decide(ScaleState(5), STEADY, 0.0, 1, 3, POLICY).target == 3
    assert decide(ScaleState(1), STEADY, 0.0, 2, 3, POLICY).target == 2


def test_waits_for_starting_workers_before_adding_more() -> None:
    starting = Load(queued=9, busy=1, live=1)
    assert run([(0.0, starting), (1.0, starting), (2.0, starting)], target=2) == [2, 2, 2]
