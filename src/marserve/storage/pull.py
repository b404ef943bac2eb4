"""``pull``: a storageUri into a local model folder, through the cache, never half visible."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from marserve.archive import ExtractLimits, unpack_archive
from marserve.archive.members import safe_member_name
from marserve.errors import ArchiveError
from marserve.storage import local
from marserve.storage.base import (
    Deadline,
    Progress,
    PullResult,
    Remote,
    RemoteObject,
    StorageError,
    StorageSettings,
)
from marserve.storage.cache import Cache, cache_key, content_key, dest_problem, materialize
from marserve.storage.progress import progress_bar
from marserve.storage.uri import Location, parse

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
RemoteFactory = Callable[[Location, StorageSettings, Deadline], Remote]


def pull(
    uri: str,
    dest: Path,
    settings: StorageSettings | None = None,
    *,
    progress: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> PullResult:
    """Make the model store a storageUri names available locally (KServe's storage initializer).

    pvc:// and local folders are returned as they are; anything remote is listed, looked up in
    the cache by URI and object versions, downloaded into the cache when missing (a single
    .zip/.tar/.tar.gz is unpacked safely) and linked into ``dest``.
    """
    settings = settings or StorageSettings()
    location = parse(uri)
    if location.kind in ("local", "pvc"):
        return local.resolve(location, Path(dest), settings)
    problem = dest_problem(Path(dest))
    if problem is not None:
        raise StorageError(uri, problem)
    deadline = Deadline(clock() + settings.timeout_s, clock)
    remote = _remote_for(location)(location, settings, deadline)
    try:
        return _pull_remote(uri, remote, Path(dest), settings, deadline, progress=progress)
    finally:
        remote.close()


def _pull_remote(
    uri: str,
    remote: Remote,
    dest: Path,
    settings: StorageSettings,
    deadline: Deadline,
    *,
    progress: bool,
) -> PullResult:
    """List, look up the cache, download what is missing, and link the entry into ``dest``."""
    objects = remote.list()
    _check_listing(uri, objects, settings.max_bytes)
    cache = Cache(settings.cache_dir)
    key = cache_key(uri, objects)
    entry = cache.lookup(key) if key is not None else None
    if entry is not None:
        materialize(entry, dest, entry.name)
        return PullResult(dest, True, 0)
    total = sum(max(obj.size, 0) for obj in objects)
    with progress_bar(total, enabled=progress) as advance, cache.staging() as staging:
        received = _download(uri, remote, objects, staging / "objects", deadline, advance)
        tree = _unpacked(uri, objects, staging, settings.max_bytes)
        entry = cache.commit(tree, key or content_key(uri, tree))
    materialize(entry, dest, entry.name)
    return PullResult(dest, False, received)


def _remote_for(location: Location) -> RemoteFactory:
    """The scheme's module, imported only when a URI needs it (each has its own SDK)."""
    if location.kind == "s3":
        from marserve.storage.s3 import S3Remote

        return S3Remote
    if location.kind == "gs":
        from marserve.storage.gcs import GCSRemote

        return GCSRemote
    if location.kind == "azure":
        from marserve.storage.azure import AzureRemote

        return AzureRemote
    from marserve.storage.http import HTTPRemote

    return HTTPRemote


def _check_listing(uri: str, objects: list[RemoteObject], max_bytes: int) -> None:
    """Refuse keys that would land outside the destination, and listings over the size cap."""
    for obj in objects:
        try:
            name = safe_member_name(obj.key, "storage")
        except ArchiveError:
            raise StorageError(
                uri, f"object key {obj.name!r} would land outside the destination"
            ) from None
        if not name or name != obj.key:
            raise StorageError(uri, f"object key {obj.name!r} is not a plain relative path")
    total = sum(max(obj.size, 0) for obj in objects)
    if total > max_bytes:
        raise StorageError(uri, f"model is {total} bytes, larger than the {max_bytes}-byte limit")


def _download(
    uri: str,
    remote: Remote,
    objects: list[RemoteObject],
    root: Path,
    deadline: Deadline,
    advance: Progress,
) -> int:
    received = 0

    def counted(count: int) -> None:
        nonlocal received
        received += count
        advance(count)
        if deadline.expired():  # the SDKs call this as bytes arrive: a trickle ends here too
            raise StorageError(uri, "timed out (the pull's time limit passed)")

    for obj in objects:
        if deadline.expired():
            raise StorageError(uri, "timed out (the pull's time limit passed)")
        target = root / obj.key
        target.parent.mkdir(parents=True, exist_ok=True)
        remote.fetch(obj, target, counted)
    return received


def _unpacked(uri: str, objects: list[RemoteObject], staging: Path, max_bytes: int) -> Path:
    """The folder to cache: the objects, or the one archive among them unpacked (KServe)."""
    root = staging / "objects"
    root.mkdir(exist_ok=True)
    if len(objects) != 1 or not objects[0].key.lower().endswith(ARCHIVE_SUFFIXES):
        return root
    archive = root / objects[0].key
    tree = staging / "tree"
    tree.mkdir()
    limits = ExtractLimits(max_member_bytes=max_bytes, max_total_bytes=max_bytes)
    try:
        unpack_archive(archive, tree, limits)
    except ArchiveError as exc:
        raise StorageError(uri, f"unsafe or broken archive: {exc}") from None
    os.unlink(archive)
    return tree
