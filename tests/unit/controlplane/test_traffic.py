"""Canary split and weighted choice, table-driven."""

from __future__ import annotations

import pytest

from marserve.controlplane.traffic import Target, canary_split, choose


@pytest.mark.parametrize(
    ("previous", "pct", "want"),
    [
        (None, 10, [Target("r2", 100, "latest")]),
        ("r1", None, [Target("r2", 100, "latest")]),
        ("r1", 100, [Target("r2", 100, "latest")]),
        ("r1", 10, [Target("r1", 90, "prev"), Target("r2", 10, "latest")]),
        ("r1", 0, [Target("r1", 100, "prev"), Target("r2", 0, "latest")]),
    ],
)
def test_canary_split(previous: str | None, pct: int | None, want: list[Target]) -> None:
    assert canary_split("r2", previous, pct) == want


def test_canary_split_rejects_negative() -> None:
    with pytest.raises(ValueError, match="canaryTrafficPercent"):
        canary_split("r2", "r1", -1)
    with pytest.raises(ValueError, match="canaryTrafficPercent"):
        canary_split("r2", "r1", 101)


@pytest.mark.parametrize(("r", "want"), [(0.0, "r1"), (0.899, "r1"), (0.9, "r2"), (0.999, "r2")])
def test_choose(r: float, want: str) -> None:
    targets = [Target("r1", 90), Target("r2", 10)]
    assert choose(targets, lambda: r) == want


def test_choose_skips_zero_and_rejects_empty() -> None:
    assert choose([Target("r1", 100), Target("r2", 0)], lambda: 0.9999) == "r1"
    with pytest.raises(ValueError, match="positive percent"):
        choose([Target("r1", 0)], lambda: 0.5)
