"""The SQLite object store: objects, resourceVersion, generation, change history, watch."""

from __future__ import annotations

import asyncio
import copy
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from marserve.controlplane.errors import AlreadyExists, Conflict, Gone, NotFound

Obj = dict[str, Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
  resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
  rv INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (resource, namespace, name));
CREATE TABLE IF NOT EXISTS changes (
  rv INTEGER PRIMARY KEY, resource TEXT NOT NULL, namespace TEXT NOT NULL,
  type TEXT NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change as a watch stream sends it: ``ADDED``, ``MODIFIED`` or ``DELETED``."""

    type: str
    resource: str
    namespace: str
    object: Obj

    @property
    def resource_version(self) -> int:
        return int(self.object["metadata"]["resourceVersion"])


Events = list[WatchEvent]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def matches_labels(obj: Mapping[str, Any], selector: Mapping[str, str] | None) -> bool:
    """Whether ``obj``'s labels contain every ``key=value`` of an equality selector."""
    if not selector:
        return True
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


class Store:
    """Objects of any resource (``pods``, ``inferenceservices.serving.kserve.io``) in SQLite.

    Every write bumps one global resourceVersion; spec changes bump ``metadata.generation``;
    ``update_status`` changes only ``status``. Changes are kept (up to ``history``) so a watch can
    resume from a resourceVersion, or gets :class:`Gone` when it is older than what is kept.
    """

    def __init__(self, path: Path | str, *, history: int = 10_000) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._history = history
        self._watchers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[WatchEvent]]] = []

    def close(self) -> None:
        self._db.close()

    @property
    def resource_version(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key='rv'").fetchone()
        return int(row[0]) if row else 0

    def get(self, resource: str, namespace: str, name: str) -> Obj:
        row = self._db.execute(
            "SELECT body FROM objects WHERE resource=? AND namespace=? AND name=?",
            (resource, namespace, name),
        ).fetchone()
        if row is None:
            raise NotFound(f'{resource} "{name}" not found')
        obj: Obj = orjson.loads(row[0])
        return obj

    def list(
        self, resource: str, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> tuple[list[Obj], int]:
        """Objects of ``resource`` (all namespaces if ``namespace`` is None) and the list's RV."""
        with self._lock:
            if namespace is None:
                rows = self._db.execute(
                    "SELECT body FROM objects WHERE resource=? ORDER BY namespace, name",
                    (resource,),
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT body FROM objects WHERE resource=? AND namespace=? ORDER BY name",
                    (resource, namespace),
                ).fetchall()
            rv = self.resource_version
        objs = [orjson.loads(r[0]) for r in rows]
        return [o for o in objs if matches_labels(o, labels)], rv

    def count(self, resource: str, namespace: str) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM objects WHERE resource=? AND namespace=?", (resource, namespace)
        ).fetchone()
        return int(row[0])

    def create(self, resource: str, obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        namespace, name = meta.get("namespace", ""), meta["name"]
        with self._lock:
            exists = self._db.execute(
                "SELECT 1 FROM objects WHERE resource=? AND namespace=? AND name=?",
                (resource, namespace, name),
            ).fetchone()
            if exists:
                raise AlreadyExists(f'{resource} "{name}" already exists')
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            meta.pop("resourceVersion", None)
            return self._write(resource, "ADDED", obj)

    def update(self, resource: str, obj: Obj) -> Obj:
        """Replace spec/metadata (not status); a stale resourceVersion is a Conflict."""
        return self._replace(resource, obj, status_only=False)

    def update_status(self, resource: str, obj: Obj) -> Obj:
        """Replace only ``status``; spec, metadata and generation stay."""
        return self._replace(resource, obj, status_only=True)

    def delete(self, resource: str, namespace: str, name: str) -> Obj:
        with self._lock:
            obj = self.get(resource, namespace, name)
            self._db.execute(
                "DELETE FROM objects WHERE resource=? AND namespace=? AND name=?",
                (resource, namespace, name),
            )
            return self._write(resource, "DELETED", obj, store=False)

    def _replace(self, resource: str, obj: Obj, *, status_only: bool) -> Obj:
        meta = obj.get("metadata", {})
        namespace, name = meta.get("namespace", ""), meta["name"]
        with self._lock:
            old = self.get(resource, namespace, name)
            wanted = meta.get("resourceVersion")
            if wanted not in (None, "") and str(wanted) != old["metadata"]["resourceVersion"]:
                raise Conflict(
                    f'Operation cannot be fulfilled on {resource} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again"
                )
            new = copy.deepcopy(old)
            if status_only:
                new["status"] = copy.deepcopy(obj.get("status", {}))
            else:
                new = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
                if "status" in old:
                    new["status"] = old["status"]
                keep = {k: old["metadata"][k] for k in ("uid", "creationTimestamp", "generation")}
                new["metadata"] = {**copy.deepcopy(meta), **keep}
                if new.get("spec") != old.get("spec"):
                    new["metadata"]["generation"] = int(keep["generation"]) + 1
            if new == old:
                return old
            return self._write(resource, "MODIFIED", new)

    def _write(self, resource: str, kind: str, obj: Obj, *, store: bool = True) -> Obj:
        """Stamp the next resourceVersion, persist the object and change, notify watchers."""
        rv = self.resource_version + 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(rv)
        namespace, body = meta.get("namespace", ""), orjson.dumps(obj)
        db = self._db
        db.execute("BEGIN")
        try:
            if store:
                db.execute(
                    "INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?)",
                    (resource, namespace, meta["name"], rv, body),
                )
            db.execute(
                "INSERT INTO changes VALUES (?,?,?,?,?)", (rv, resource, namespace, kind, body)
            )
            db.execute("DELETE FROM changes WHERE rv <= ?", (rv - self._history,))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('rv', ?)", (rv,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        event = WatchEvent(kind, resource, namespace, obj)
        for loop, queue in list(self._watchers):
            loop.call_soon_threadsafe(queue.put_nowait, event)
        return copy.deepcopy(obj)

    def changes_since(self, resource: str, namespace: str | None, rv: int) -> Events:
        """Kept changes after ``rv``; :class:`Gone` when ``rv`` is older than the history."""
        oldest = self._db.execute("SELECT MIN(rv) FROM changes").fetchone()[0]
        if rv < self.resource_version and (oldest is None or rv < oldest - 1):
            raise Gone(f"too old resource version: {rv} ({oldest})")
        rows = self._db.execute(
            "SELECT type, namespace, body FROM changes WHERE rv > ? AND resource=? ORDER BY rv",
            (rv, resource),
        ).fetchall()
        events = [WatchEvent(t, resource, ns, orjson.loads(b)) for t, ns, b in rows]
        return [e for e in events if namespace is None or e.namespace == namespace]

    async def watch(
        self,
        resource: str,
        namespace: str | None = None,
        since: int | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """Changes of ``resource`` after ``since`` (default: now), then live ones."""
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        entry = (asyncio.get_running_loop(), queue)
        with self._lock:
            start = self.resource_version if since is None else since
            backlog = self.changes_since(resource, namespace, start) if since is not None else []
            self._watchers.append(entry)
        try:
            last = start
            for event in backlog:
                last = event.resource_version
                if matches_labels(event.object, labels):
                    yield event
            while True:
                event = await queue.get()
                if event.resource != resource or event.resource_version <= last:
                    continue
                if namespace is not None and event.namespace != namespace:
                    continue
                last = event.resource_version
                if matches_labels(event.object, labels):
                    yield event
        finally:
            self._watchers.remove(entry)
