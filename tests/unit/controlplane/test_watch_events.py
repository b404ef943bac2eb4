"""Selector-filtered watches: what each change becomes for a client holding ``matched``."""

from __future__ import annotations

import pytest

from marserve.controlplane.api.watch import selected_type
from marserve.controlplane.store import WatchEvent


def event(kind: str, team: str) -> WatchEvent:
    obj = {
        "metadata": {
            "name": "m",
            "namespace": "ns",
            "labels": {"team": team},
            "resourceVersion": "5",
        }
    }
    return WatchEvent(kind, "pods", "ns", obj)


def ml(obj: dict[str, object]) -> bool:
    return obj["metadata"]["labels"]["team"] == "ml"  # type: ignore[index]


CASES = [
    # (event, team after, held before, sent, held after)
    ("ADDED", "ml", False, "ADDED", True),
    ("ADDED", "ops", False, None, False),
    ("MODIFIED", "ml", True, "MODIFIED", True),
    ("MODIFIED", "ops", True, "DELETED", False),  # stopped matching
    ("MODIFIED", "ml", False, "ADDED", True),  # started matching
    ("MODIFIED", "ops", False, None, False),
    ("DELETED", "ml", True, "DELETED", False),
    ("DELETED", "ops", False, None, False),
]


@pytest.mark.parametrize(("kind", "team", "held", "sent", "after"), CASES)
def test_selected_type(kind: str, team: str, held: bool, sent: str | None, after: bool) -> None:
    matched = {("ns", "m")} if held else set()
    assert selected_type(event(kind, team), ml, matched) == sent
    assert (("ns", "m") in matched) is after
