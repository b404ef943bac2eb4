"""pvc:// claims and local paths: the folder itself, read in place; a local archive unpacked."""

from __future__ import annotations

import os
from pathlib import Path

from marserve.archive import ExtractLimits, unpack_archive
from marserve.errors import ArchiveError
from marserve.storage.base import PullResult, StorageError, StorageSettings
from marserve.storage.cache import dest_problem
from marserve.storage.uri import Location

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


def resolve(location: Location, dest: Path, settings: StorageSettings) -> PullResult:
    """The folder a pvc:// or local URI names (no copy); a single archive file is unpacked."""
    path = _claim_path(location, settings) if location.kind == "pvc" else location.path
    assert path is not None
    if path.is_dir():
        return PullResult(path, True, 0)
    if path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES):
        return _unpack(location.uri, path, dest, settings)
    raise StorageError(location.uri, f"no model found: {path} is not a folder or an archive")


def _claim_path(location: Location, settings: StorageSettings) -> Path:
    claim = location.bucket
    base = settings.pvc.get(claim)
    if base is None:
        known = ", ".join(sorted(settings.pvc)) or "none"
        raise StorageError(
            location.uri,
            f"no folder is mapped to claim {claim!r} (--pvc CLAIM=DIR; known: {known})",
        )
    root = os.path.realpath(Path(base).expanduser())
    path = os.path.realpath(os.path.join(root, location.prefix))
    if os.path.commonpath([root, path]) != root:
        raise StorageError(location.uri, "the path leaves the claim's folder")
    return Path(path)


def _unpack(uri: str, archive: Path, dest: Path, settings: StorageSettings) -> PullResult:
    problem = dest_problem(dest)
    if problem is not None or (dest.exists() and any(dest.iterdir())):
        raise StorageError(uri, problem or f"destination {dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    limits = ExtractLimits(max_member_bytes=settings.max_bytes, max_total_bytes=settings.max_bytes)
    try:
        unpack_archive(archive, dest, limits)
    except ArchiveError as exc:
        for child in dest.iterdir():
            import shutil

            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
        raise StorageError(uri, f"unsafe or broken archive: {exc}") from None
    return PullResult(dest, False, 0)
