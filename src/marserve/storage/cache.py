"""The content-addressed download cache: complete folders keyed by URI and object versions."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from marserve.storage.base import RemoteObject

MARKER = ".marserve-pull"  # names the cache entry a destination folder was made from


def cache_key(uri: str, objects: Sequence[RemoteObject]) -> str | None:
    """The key for a listing, or None when an object has no version (a plain https:// URL
    without ETag): then only the content names the entry (see ``content_key``)."""
    if any(not obj.version for obj in objects):
        return None
    listing = sorted((obj.key, obj.size, obj.version) for obj in objects)
    return _digest(["v1", uri.rstrip("/"), listing])


def content_key(uri: str, folder: Path) -> str:
    """A key from the bytes of every file under ``folder``, for objects without versions."""
    sha = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        sha.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                sha.update(chunk)
    return _digest(["content", uri.rstrip("/"), sha.hexdigest()])


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()


class Cache:
    """``root/<key>/`` holds one complete pull; entries appear only by a rename, never half."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    def lookup(self, key: str) -> Path | None:
        entry = self.root / key
        return entry if entry.is_dir() else None

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh private folder inside the cache; removed unless ``commit`` took it."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder = Path(tempfile.mkdtemp(prefix=".partial-", dir=self.root))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def commit(self, folder: Path, key: str) -> Path:
        """Make ``folder`` the entry for ``key`` (read-only files); an entry that another pull
        committed first wins, and ``folder`` is then left for ``staging`` to remove."""
        for path in folder.rglob("*"):
            if path.is_file():
                path.chmod(0o444)
        entry = self.root / key
        try:
            os.rename(folder, entry)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not entry.is_dir():
                raise
        return entry


def materialize(entry: Path, dest: Path, key: str) -> None:
    """Give ``dest`` the entry's files (hard links where the file system allows, else copies),
    staged beside ``dest`` and renamed into place. An existing ``dest`` must be empty or an
    earlier pull (it holds MARKER); it is replaced only once the new folder is complete."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        shutil.copytree(entry, staged, copy_function=_link_or_copy, dirs_exist_ok=True)
        (staged / MARKER).write_text(key + "\n")
        _swap(staged, dest)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def dest_problem(dest: Path) -> str | None:
    """Why ``dest`` cannot receive a pull, or None."""
    if not os.path.lexists(dest):
        return None
    if not stat.S_ISDIR(os.lstat(dest).st_mode):
        return f"destination {dest} exists and is not a folder"
    with os.scandir(dest) as entries:
        empty = next(entries, None) is None
    if not empty and not (dest / MARKER).is_file():
        return f"destination {dest} is not empty and holds no earlier pull"
    return None


def _swap(staged: Path, dest: Path) -> None:
    if not os.path.lexists(dest):
        os.rename(staged, dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    os.rename(dest, old / "d")
    os.rename(staged, dest)
    shutil.rmtree(old, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst
