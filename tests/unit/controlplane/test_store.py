"""Store: resourceVersion, generation, conflicts, status, restart and watch resume/410."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from marserve.controlplane.errors import AlreadyExists, Conflict, Gone, NotFound
from marserve.controlplane.store import Store

R = "inferenceservices.serving.kserve.io"


def obj(
    name: str, spec: dict[str, object] | None = None, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default", "labels": labels or {}},
        "spec": spec or {"a": 1},
    }


def test_create_get_update_conflict_generation(tmp_path: Path) -> None:
    s = Store(tmp_path / "db")
    a = s.create(R, obj("a"))
    assert a["metadata"]["resourceVersion"] == "1" and a["metadata"]["generation"] == 1
    with pytest.raises(AlreadyExists):
        s.create(R, obj("a"))
    a["spec"] = {"a": 2}
    b = s.update(R, a)
    assert b["metadata"]["generation"] == 2 and b["metadata"]["resourceVersion"] == "2"
    with pytest.raises(Conflict):
        s.update(R, a)  # stale resourceVersion "1"
    b["status"] = {"ready": True}
    c = s.update_status(R, b)
    assert c["metadata"]["generation"] == 2 and c["status"] == {"ready": True}
    c["metadata"]["labels"] = {"x": "y"}
    d = s.update(R, c)
    assert d["metadata"]["generation"] == 2 and d["status"] == {"ready": True}
    s.delete(R, "default", "a")
    with pytest.raises(NotFound):
        s.get(R, "default", "a")


def test_list_label_selector_and_restart(tmp_path: Path) -> None:
    s = Store(tmp_path / "db")
    s.create(R, obj("a", labels={"app": "x"}))
    s.create(R, obj("b", labels={"app": "y"}))
    items, rv = s.list(R, "default", {"app": "x"})
    assert [i["metadata"]["name"] for i in items] == ["a"] and rv == 2
    s.close()
    s2 = Store(tmp_path / "db")
    assert s2.resource_version == 2
    assert s2.get(R, "default", "b")["metadata"]["resourceVersion"] == "2"


def test_watch_resumes_and_gone(tmp_path: Path) -> None:
    s = Store(tmp_path / "db", history=3)

    async def collect(since: int, n: int) -> list[tuple[str, str]]:
        out = []
        async for e in s.watch(R, "default", since=since):
            out.append((e.type, e.object["metadata"]["name"]))
            if len(out) == n:
                break
        return out

    s.create(R, obj("a"))
    s.create(R, obj("b"))
    s.delete(R, "default", "a")
    assert asyncio.run(collect(1, 2)) == [("ADDED", "b"), ("DELETED", "a")]
    for n in "cdef":
        s.create(R, obj(n))
    with pytest.raises(Gone):
        asyncio.run(collect(1, 1))

    async def live() -> list[tuple[str, str]]:
        task = asyncio.create_task(collect(s.resource_version, 1))
        await asyncio.sleep(0.01)
        s.create(R, obj("g"))
        return await asyncio.wait_for(task, 5)

    assert asyncio.run(live()) == [("ADDED", "g")]
