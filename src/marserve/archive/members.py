"""Archive members as hostile input: name rules, caps, error mapping and the bounded writer."""

from __future__ import annotations

import os
import re
import stat
import struct
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from marserve.archive.manifest import MAX_MANIFEST_BYTES
from marserve.errors import ArchiveError

CHUNK_BYTES = 1 << 20
_DRIVE_RE = re.compile(r"[A-Za-z]:")
_OPEN_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


@dataclass(frozen=True, slots=True)
class ExtractLimits:
    """Extraction caps; bytes are counted as they stream, header sizes are not trusted."""

    max_members: int = 10_000
    max_member_bytes: int = 4 << 30
    max_total_bytes: int = 4 << 30
    max_ratio: float = 200.0
    # The compression ratio is judged only once a member (or a tar stream) passes this many
    # bytes, so small, very compressible files (configs, zero tensors) are not false positives.
    ratio_grace_bytes: int = 1 << 20


DEFAULT_LIMITS = ExtractLimits()


@dataclass(frozen=True, slots=True)
class Entry:
    """One archive member: its name as stored, its safe normalized name, kind and declared size."""

    raw: str
    name: str
    is_dir: bool
    size: int


Opener = Callable[[], IO[bytes]]
# visit(entry, open its data (None for folders), compressed size where the format has one)
Visit = Callable[[Entry, Opener | None, int | None], None]


def member_error(archive: str, raw: str, reason: str) -> ArchiveError:
    """An ``ArchiveError`` naming the archive and the member."""
    return ArchiveError(f"{archive}: member {raw!r}: {reason}")


def safe_member_name(raw: str, archive: str) -> str:
    """The normalized relative name of a member, or ``ArchiveError`` when it is unsafe.

    ``.`` and empty segments are dropped (``./model.pt`` from ``tar -C dir .`` is fine); the
    root itself normalizes to ``""``.
    """
    if "\x00" in raw:
        raise member_error(archive, raw, "name contains a NUL byte")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise member_error(archive, raw, "name contains a control character")
    if "\\" in raw:
        raise member_error(archive, raw, "name contains a backslash")
    if raw.startswith("/"):
        raise member_error(archive, raw, "name is an absolute path")
    if _DRIVE_RE.match(raw):
        raise member_error(archive, raw, "name starts with a drive letter")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise member_error(archive, raw, "name contains '..'")
    return "/".join(parts)


def _key(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


class Layout:
    """The members seen so far: rejects duplicates, case collisions and file/folder clashes."""

    def __init__(self, archive: str, limits: ExtractLimits) -> None:
        self.archive = archive
        self.limits = limits
        self.count = 0
        self.files: set[str] = set()
        self.dirs: set[str] = set()
        self._file_keys: dict[str, str] = {}
        self._dir_keys: dict[str, str] = {}
        self._explicit_dirs: set[str] = set()

    def add(self, entry: Entry) -> None:
        """Record ``entry``; raise ``ArchiveError`` if it collides with an earlier one."""
        self.count += 1
        if self.count > self.limits.max_members:
            raise member_error(
                self.archive, entry.raw, f"more than {self.limits.max_members} members"
            )
        if not entry.name:
            if entry.is_dir:
                return
            raise member_error(self.archive, entry.raw, "name names no file")
        key = _key(entry.name)
        if key in self._file_keys or (entry.is_dir and key in self._explicit_dirs):
            raise member_error(self.archive, entry.raw, "duplicate name (ignoring case)")
        if not entry.is_dir and key in self._dir_keys:
            raise member_error(self.archive, entry.raw, "name is both a file and a folder")
        parts = entry.name.split("/")
        for depth in range(1, len(parts)):
            self._add_dir("/".join(parts[:depth]), entry)
        if entry.is_dir:
            self._add_dir(entry.name, entry)
            self._explicit_dirs.add(key)
        else:
            self.files.add(entry.name)
            self._file_keys[key] = entry.name

    def _add_dir(self, name: str, entry: Entry) -> None:
        key = _key(name)
        if key in self._file_keys:
            raise member_error(self.archive, entry.raw, f"folder {name!r} clashes with a file")
        seen = self._dir_keys.setdefault(key, name)
        if seen != name:
            raise member_error(
                self.archive, entry.raw, f"folder {name!r} collides with {seen!r} (ignoring case)"
            )
        self.dirs.add(name)

    def top_names(self) -> set[str]:
        """The first path segment of every member."""
        return {name.split("/", 1)[0] for name in self.files | self.dirs}


class Stager:
    """Writes members under a private root, counting bytes and enforcing ``ExtractLimits``."""

    def __init__(self, root: Path, archive: str, limits: ExtractLimits) -> None:
        self.root = root
        self.archive = archive
        self.limits = limits
        self.total = 0
        self._root_str = os.path.realpath(root)

    def mkdir(self, name: str, raw: str) -> Path:
        """Create folder ``name`` (and its parents) under the root; return its path."""
        path = self.root
        for part in name.split("/") if name else ():
            path = path / part
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    raise member_error(self.archive, raw, "folder clashes with a file") from None
        self._check_inside(path, raw)
        return path

    def write(
        self,
        entry: Entry,
        source: IO[bytes],
        *,
        compressed_size: int | None = None,
    ) -> None:
        """Stream ``source`` into the member's file, aborting as soon as a cap is crossed."""
        parent, _, base = entry.name.rpartition("/")
        target = self.mkdir(parent, entry.raw) / base
        self._check_inside(target, entry.raw)
        try:
            fd = os.open(target, _OPEN_FLAGS, 0o600)
        except FileExistsError:
            raise member_error(self.archive, entry.raw, "duplicate name") from None
        written = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(CHUNK_BYTES):
                written += len(chunk)
                self.total += len(chunk)
                self._check_sizes(entry, written, compressed_size)
                out.write(chunk)

    def _check_sizes(self, entry: Entry, written: int, compressed_size: int | None) -> None:
        limits = self.limits
        if written > limits.max_member_bytes:
            raise member_error(
                self.archive, entry.raw, f"larger than {limits.max_member_bytes} bytes"
            )
        if self.total > limits.max_total_bytes:
            raise member_error(
                self.archive, entry.raw, f"archive expands past {limits.max_total_bytes} bytes"
            )
        if (
            compressed_size is not None
            and written > limits.ratio_grace_bytes
            and written > limits.max_ratio * max(compressed_size, 1)
        ):
            raise member_error(
                self.archive, entry.raw, f"compression ratio above {limits.max_ratio:g}"
            )

    def _check_inside(self, path: Path, raw: str) -> None:
        real = os.path.normpath(os.path.join(self._root_str, os.path.relpath(path, self.root)))
        if os.path.commonpath([self._root_str, real]) != self._root_str:
            raise member_error(self.archive, raw, "would be written outside the staging folder")


def check_declared_size(entry: Entry, archive: str, limits: ExtractLimits) -> None:
    """Reject a member whose header already declares more bytes than a cap allows."""
    if entry.size < 0:
        raise member_error(archive, entry.raw, "negative size in header")
    if entry.size > limits.max_member_bytes:
        raise member_error(archive, entry.raw, f"larger than {limits.max_member_bytes} bytes")


def type_problem(mode: int) -> str | None:
    """Why a file of this mode is refused (link, device, FIFO, socket), or None."""
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device"
    if stat.S_ISFIFO(mode):
        return "is a FIFO"
    if stat.S_ISSOCK(mode):
        return "is a socket"
    return None


def open_regular(path: Path, label: str, raw: str) -> IO[bytes]:
    """Open a regular file for reading without following a final symlink or blocking on FIFOs."""
    try:
        fd = os.open(path, _OPEN_READ)
    except OSError as exc:
        raise member_error(label, raw, f"cannot open: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise member_error(label, raw, "is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


# Library errors that mean "this archive is broken" (bad zip, truncated gzip, CRC, I/O).
READ_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    OSError,
    zlib.error,
    struct.error,
    ValueError,
    RuntimeError,
)


def error_reason(exc: BaseException) -> str:
    """A short reason for an error, without the file paths ``OSError`` carries."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


@contextmanager
def reading_errors(label: str, member: Callable[[], str | None]) -> Iterator[None]:
    """Turn library errors (bad zip, truncated gzip, CRC, I/O) into ``ArchiveError``."""
    try:
        yield
    except READ_ERRORS as exc:
        name = member()
        where = f"{label}: member {name!r}" if name is not None else label
        raise ArchiveError(f"{where}: {error_reason(exc)}") from None


def read_capped(stream: IO[bytes], label: str, raw: str) -> bytes:
    """Read a manifest, refusing more than ``MAX_MANIFEST_BYTES``."""
    data = stream.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise member_error(label, raw, f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
    return data
