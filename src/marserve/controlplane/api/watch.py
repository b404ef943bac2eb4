"""``watch=true``: a stream of JSON lines, from a resourceVersion, with bookmarks and timeout."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from marserve.controlplane.errors import Gone
from marserve.controlplane.store import Obj, Store, WatchEvent

BOOKMARK_S = 5.0


def _line(kind: str, obj: Obj) -> bytes:
    return orjson.dumps({"type": kind, "object": obj}) + b"\n"


async def _pump(
    store: Store, key: str, namespace: str | None, since: int, queue: asyncio.Queue[Any]
) -> None:
    """Feed the store's watch into ``queue`` (a task, so waiting on the queue can time out)."""
    try:
        async for event in store.watch(key, namespace, since):
            await queue.put(event)
    except Gone as err:
        await queue.put(err)


async def watch_stream(
    store: Store,
    key: str,
    namespace: str | None,
    since: int | None,
    *,
    initial: list[Obj],
    keep: Callable[[Obj], bool],
    render: Callable[[Obj], Obj],
    timeout_s: float,
    bookmarks: bool,
    bookmark_obj: Callable[[int], Obj],
    initial_end: bool = False,
    matched: set[tuple[str, str]] | None = None,
    bookmark_s: float = BOOKMARK_S,
) -> AsyncIterator[bytes]:
    """Events after ``since`` (``initial`` objects as ADDED first when listing from 0).

    A ``since`` older than the kept history ends the stream with an ``ERROR`` event carrying
    the 410 Expired Status, as the API server does."""
    deadline = time.monotonic() + timeout_s
    matched = set() if matched is None else matched
    for obj in initial:
        yield _line("ADDED", render(obj))
    last = since if since is not None else store.resource_version
    if initial_end:
        marker = bookmark_obj(last)
        marker["metadata"]["annotations"] = {"k8s.io/initial-events-end": "true"}
        yield _line("BOOKMARK", marker)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    task = asyncio.create_task(_pump(store, key, namespace, last, queue))
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = await asyncio.wait_for(queue.get(), min(left, bookmark_s))
            except TimeoutError:
                if bookmarks and deadline - time.monotonic() > 0:
                    yield _line("BOOKMARK", bookmark_obj(max(last, store.resource_version)))
                continue
            if isinstance(item, Gone):
                yield _line("ERROR", item.status())
                return
            event: WatchEvent = item
            last = event.resource_version
            kind = selected_type(event, keep, matched)
            if kind is not None:
                yield _line(kind, render(event.object))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def selected_type(
    event: WatchEvent, keep: Callable[[Obj], bool], matched: set[tuple[str, str]]
) -> str | None:
    """The event a selector-filtered watch sends, as the API server does: an object that
    starts matching is ADDED, one that stops matching is DELETED; ``matched`` is updated."""
    key, now = _key(event.object), keep(event.object)
    was = key in matched
    if event.type == "DELETED":
        matched.discard(key)
        return "DELETED" if was or now else None
    if now:
        matched.add(key)
        return "MODIFIED" if was and event.type == "MODIFIED" else "ADDED"
    matched.discard(key)
    return "DELETED" if was else None


def bookmark(kind: str, api_version: str) -> Callable[[int], Any]:
    def make(rv: int) -> Obj:
        return {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": str(rv)}}

    return make
