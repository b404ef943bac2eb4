"""Traffic split: canary/latest percents per revision and weighted choice with injected random."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """One traffic block: a revision, its percent and an optional tag."""

    revision: str
    percent: int
    tag: str | None = None


def canary_split(latest: str, previous: str | None, canary_percent: int | None) -> list[Target]:
    """KServe canary: latest gets canaryTrafficPercent, the previous rolled-out one the rest."""
    if canary_percent is not None and not 0 <= canary_percent <= 100:
        raise ValueError(f"canaryTrafficPercent must be 0..100, got {canary_percent}")
    if canary_percent is None or previous is None or canary_percent == 100:
        return [Target(latest, 100, "latest")]
    return [
        Target(previous, 100 - canary_percent, "prev"),
        Target(latest, canary_percent, "latest"),
    ]


def choose(targets: Sequence[Target], rand: Callable[[], float]) -> str:
    """Pick a revision by percent using rand() in [0, 1); zero-percent blocks are never picked."""
    total = sum(t.percent for t in targets)
    if total <= 0:
        raise ValueError("no traffic target has a positive percent")
    point = rand() * total
    for t in targets:
        if point < t.percent:
            return t.revision
        point -= t.percent
    return next(t.revision for t in reversed(targets) if t.percent > 0)
