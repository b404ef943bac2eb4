"""An unpacked model folder as an archive source: walked with the same rules as members."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from marserve.archive.manifest import MANIFEST_PATH
from marserve.archive.members import (
    Entry,
    ExtractLimits,
    Layout,
    Opener,
    Visit,
    check_declared_size,
    member_error,
    open_regular,
    read_capped,
    reading_errors,
    safe_member_name,
    type_problem,
)
from marserve.errors import ArchiveError


def read_folder_manifest(folder: Path, label: str) -> bytes:
    """The bytes of ``MAR-INF/MANIFEST.json`` (neither may be a symlink), size-capped."""
    inf = folder / MANIFEST_PATH.split("/")[0]
    try:
        mode = os.lstat(inf).st_mode
    except FileNotFoundError:
        raise ArchiveError(f"{label}: no {MANIFEST_PATH} in the folder") from None
    if not stat.S_ISDIR(mode):
        raise member_error(label, inf.name, "is not a folder")
    with open_regular(folder / MANIFEST_PATH, label, MANIFEST_PATH) as stream:
        return read_capped(stream, label, MANIFEST_PATH)


def walk_folder(source: Path, label: str, limits: ExtractLimits, visit: Visit) -> Layout:
    """Visit every file and folder under ``source`` with the same rules as archive members."""
    root = os.path.realpath(source)
    layout = Layout(label, limits)
    pending = [""]
    current: str | None = None
    with reading_errors(label, lambda: current):
        while pending:
            rel = pending.pop()
            with os.scandir(os.path.join(root, rel)) as scan:
                items = sorted(scan, key=lambda item: item.name)
            for item in items:
                current = f"{rel}/{item.name}" if rel else item.name
                entry, path = _folder_entry(item, current, root, label)
                layout.add(entry)
                check_declared_size(entry, label, limits)
                if entry.is_dir:
                    pending.append(current)
                visit(entry, None if entry.is_dir else _folder_opener(path, label, current), None)
    return layout


def _folder_entry(item: os.DirEntry[str], raw: str, root: str, label: str) -> tuple[Entry, str]:
    name = safe_member_name(raw, label)
    mode = item.stat(follow_symlinks=False).st_mode
    path = item.path
    if stat.S_ISLNK(mode):
        path = _link_target(item.path, root, label, raw)
        mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        return Entry(raw, name, True, 0), path
    if stat.S_ISREG(mode):
        return Entry(raw, name, False, os.stat(path).st_size), path
    raise member_error(label, raw, type_problem(mode) or "unsupported file type")


def _folder_opener(path: str, label: str, raw: str) -> Opener:
    return lambda: open_regular(Path(path), label, raw)


def _link_target(link: str, root: str, label: str, raw: str) -> str:
    """A symlink may point at a regular file inside the folder; nothing else is followed."""
    target = os.path.realpath(link)
    if os.path.commonpath([target, root]) != root:
        raise member_error(label, raw, "is a symbolic link pointing outside the folder")
    try:
        mode = os.stat(target).st_mode
    except OSError:
        raise member_error(label, raw, "is a dangling symbolic link") from None
    if not stat.S_ISREG(mode):
        raise member_error(label, raw, "is a symbolic link to something other than a file")
    return target
