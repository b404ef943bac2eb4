"""Selector-filtered watches: what each change becomes for a client holding ``matched``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from marserve.controlplane.api.watch import bookmark, selected_type, watch_stream
from marserve.controlplane.store import Store, WatchEvent


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


def run_stream(store: Store, since: int | None, **kwargs: Any) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        stream = watch_stream(
            store,
            "pods",
            "ns",
            since,
            initial=[],
            keep=lambda o: True,
            render=lambda o: o,
            bookmark_obj=bookmark("Pod", "v1"),
            **kwargs,
        )
        return [orjson.loads(line) async for line in stream]

    return asyncio.run(asyncio.wait_for(collect(), 30))


def pod(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns"}}


def test_stream_resumes_then_bookmarks_until_the_timeout(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    try:
        since = store.resource_version
        store.create("pods", pod("a"))
        store.delete("pods", "ns", "a")
        got = run_stream(store, since, timeout_s=0.5, bookmarks=True, bookmark_s=0.1)
        assert [e["type"] for e in got[:2]] == ["ADDED", "DELETED"]
        assert {e["type"] for e in got[2:]} == {"BOOKMARK"} and len(got) >= 3
        assert got[-1]["object"] == {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(store.resource_version)},
        }
        assert run_stream(store, None, timeout_s=0.3, bookmarks=False, bookmark_s=0.1) == []
    finally:
        store.close()


def test_a_too_old_resource_version_is_an_error_event(tmp_path: Path) -> None:
    store = Store(tmp_path / "db", history=2)
    try:
        for i in range(5):
            store.create("pods", pod(f"p{i}"))
        got = run_stream(store, 1, timeout_s=5, bookmarks=False)
        assert len(got) == 1 and got[0]["type"] == "ERROR"
        assert got[0]["object"]["code"] == 410 and got[0]["object"]["reason"] == "Expired"
    finally:
        store.close()
