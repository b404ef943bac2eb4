"""Open model archives (.mar zip, tar.gz, unpacked folder), validate and extract them safely."""

from __future__ import annotations

import gzip
import os
import secrets
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, Protocol

from marserve.archive.folder import read_folder_manifest, walk_folder
from marserve.archive.manifest import MANIFEST_PATH, Manifest
from marserve.archive.members import (
    DEFAULT_LIMITS,
    READ_ERRORS,
    Entry,
    ExtractLimits,
    Layout,
    Opener,
    Stager,
    Visit,
    check_declared_size,
    error_reason,
    member_error,
    open_regular,
    read_capped,
    reading_errors,
    safe_member_name,
    type_problem,
)
from marserve.errors import ArchiveError

__all__ = [
    "DEFAULT_LIMITS",
    "ExtractLimits",
    "ExtractedArchive",
    "extract_archive",
    "list_members",
    "read_manifest",
]

Kind = Literal["dir", "zip", "tgz", "tar"]
_ZIP_ENCRYPTED_FLAGS = 0x1 | 0x40  # traditional and strong encryption
_MAX_TAR_READ = 16 << 20  # no tar header (pax, GNU long name) may be larger than this
_EOCD_SIZE, _EOCD64_LOCATOR_SIZE = 22, 20
_MAX_DIRECTORY_ENTRY = 4096  # average central-directory bytes per member we accept


@dataclass(frozen=True, slots=True)
class ExtractedArchive:
    """An archive extracted into its own private folder; ``path`` is the handlers' model_dir."""

    path: Path
    manifest: Manifest


def read_manifest(source: Path, limits: ExtractLimits = DEFAULT_LIMITS) -> Manifest:
    """The validated manifest of a .mar, tar.gz or folder, without extracting anything."""
    source = Path(source)
    label = _label(source)
    kind = _detect(source, label)
    if kind == "dir":
        return Manifest.from_json(read_folder_manifest(source, label), label)
    found: dict[str, bytes] = {}

    def visit(entry: Entry, opener: Opener | None, _compressed: int | None) -> None:
        if opener is not None and _is_manifest_candidate(entry.name):
            with opener() as stream:
                found[entry.name] = read_capped(stream, label, entry.raw)

    layout = _walk(source, kind, label, limits, visit)
    return Manifest.from_json(found[_manifest_member(layout, label)], label)


def list_members(source: Path, limits: ExtractLimits = DEFAULT_LIMITS) -> list[tuple[str, int]]:
    """Every file member as (name as stored, uncompressed size); folders are left out.

    The same member rules as extraction apply, so a hostile archive raises ``ArchiveError``.
    """
    source = Path(source)
    label = _label(source)
    members: list[tuple[str, int]] = []

    def visit(entry: Entry, opener: Opener | None, _compressed: int | None) -> None:
        if not entry.is_dir:
            members.append((entry.raw, entry.size))

    _walk(source, _detect(source, label), label, limits, visit)
    return members


def extract_archive(
    source: Path, staging_parent: Path, limits: ExtractLimits = DEFAULT_LIMITS
) -> ExtractedArchive:
    """Extract (or copy, for a folder) into a fresh 0700 folder under ``staging_parent``.

    The archive is hostile input: on any error the staging folder is removed and
    ``ArchiveError`` names the archive and the member. Nothing is written elsewhere.
    """
    source = Path(source)
    label = _label(source)
    kind = _detect(source, label)
    staging_parent = Path(staging_parent)
    if kind == "dir" and _is_within(staging_parent, source):
        raise ArchiveError(f"{label}: the staging folder lies inside the model folder")
    staging_parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix="marserve-model-", dir=staging_parent))
    try:
        layout = _stage(source, kind, label, staging, limits)
        member = _manifest_member(layout, label, nested=kind != "dir")
        top = member.removesuffix(MANIFEST_PATH).rstrip("/")
        if top:
            _unwrap(staging, top, label)
        with open_regular(staging / MANIFEST_PATH, label, MANIFEST_PATH) as stream:
            manifest = Manifest.from_json(read_capped(stream, label, MANIFEST_PATH), label)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExtractedArchive(path=staging, manifest=manifest)


def unpack_archive(source: Path, dest: Path, limits: ExtractLimits = DEFAULT_LIMITS) -> None:
    """Unpack a zip, tar or tar.gz into the existing, empty folder ``dest``, with the member
    checks and bomb limits of ``extract_archive`` but no manifest required (a storageUri's
    archive holds a whole model store). On error ``ArchiveError``; the caller discards ``dest``.
    """
    source = Path(source)
    label = _label(source)
    kind = _detect(source, label)
    if kind == "dir":
        raise ArchiveError(f"{label}: not an archive")
    _stage(source, kind, label, Path(dest), limits)


def _stage(source: Path, kind: Kind, label: str, staging: Path, limits: ExtractLimits) -> Layout:
    stager = Stager(staging, label, limits)

    def visit(entry: Entry, opener: Opener | None, compressed: int | None) -> None:
        if entry.is_dir:
            stager.mkdir(entry.name, entry.raw)
        elif opener is not None:
            with opener() as stream:
                stager.write(entry, stream, compressed_size=compressed)

    return _walk(source, kind, label, limits, visit)


# -- format detection and shared helpers ------------------------------------------------------


def _label(source: Path) -> str:
    return source.name or str(source)


def _detect(source: Path, label: str) -> Kind:
    try:
        st = source.stat()
    except FileNotFoundError:
        raise ArchiveError(f"{label}: no such archive file or folder") from None
    except OSError as exc:
        raise ArchiveError(f"{label}: cannot open: {error_reason(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if not stat.S_ISREG(st.st_mode):
        raise ArchiveError(f"{label}: not a regular file")
    if st.st_size == 0:
        raise ArchiveError(f"{label}: empty file (0 bytes)")
    with open(source, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"PK"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tgz"
    if head[257:262] == b"ustar":
        return "tar"
    raise ArchiveError(f"{label}: not a zip (.mar) or tar.gz archive")


def _is_manifest_candidate(name: str) -> bool:
    return name == MANIFEST_PATH or (name.count("/") == 2 and name.endswith(f"/{MANIFEST_PATH}"))


def _manifest_member(layout: Layout, label: str, *, nested: bool = True) -> str:
    """Where the manifest is: at the root, or under a single top folder (tar.gz from TMA)."""
    if MANIFEST_PATH in layout.files:
        return MANIFEST_PATH
    tops = layout.top_names()
    if nested and len(tops) == 1:
        inner = f"{next(iter(tops))}/{MANIFEST_PATH}"
        if inner in layout.files:
            return inner
    raise ArchiveError(f"{label}: no {MANIFEST_PATH} in the archive")


def _unwrap(staging: Path, top: str, label: str) -> None:
    """Move the single top folder's contents up so that ``staging`` is the model folder."""
    holder = staging / f".marserve-unwrap-{secrets.token_hex(8)}"
    os.rename(staging / top, holder)
    for child in sorted(os.listdir(holder)):
        if os.path.lexists(staging / child):
            raise member_error(label, f"{top}/{child}", "clashes with the unwrapped folder")
        os.rename(holder / child, staging / child)
    os.rmdir(holder)


def _is_within(path: Path, folder: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, base]) == base


def _walk(source: Path, kind: Kind, label: str, limits: ExtractLimits, visit: Visit) -> Layout:
    if kind == "zip":
        return _walk_zip(source, label, limits, visit)
    if kind == "dir":
        return walk_folder(source, label, limits, visit)
    return _walk_tar(source, kind, label, limits, visit)


# -- zip ----------------------------------------------------------------------------------------


def _walk_zip(source: Path, label: str, limits: ExtractLimits, visit: Visit) -> Layout:
    _check_zip_directory(source, label, limits)
    try:
        archive = zipfile.ZipFile(source)
    except READ_ERRORS as exc:
        raise ArchiveError(f"{label}: not a readable zip archive: {error_reason(exc)}") from None
    with archive:
        entries, layout = _zip_entries(archive, label, limits)
        current: str | None = None
        with reading_errors(label, lambda: current):
            for info, entry in entries:
                current = entry.raw
                opener = None if entry.is_dir else _zip_opener(archive, info)
                visit(entry, opener, info.compress_size)
    return layout


def _check_zip_directory(source: Path, label: str, limits: ExtractLimits) -> None:
    """Read the member count and directory size from the end record before zipfile parses
    (and holds in memory) every entry of a possibly huge central directory."""
    with open(source, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - (_EOCD_SIZE + 0xFFFF + _EOCD64_LOCATOR_SIZE)))
        tail = handle.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < _EOCD_SIZE:
            return  # zipfile reports the archive as unreadable
        count, directory_size = struct.unpack_from("<HI", tail, at + 10)
        locator = at - _EOCD64_LOCATOR_SIZE
        if locator >= 0 and tail.startswith(b"PK\x06\x07", locator):
            (offset,) = struct.unpack_from("<Q", tail, locator + 8)
            handle.seek(offset)
            record = handle.read(56)
            if len(record) == 56 and record.startswith(b"PK\x06\x06"):
                count, directory_size = struct.unpack_from("<QQ", record, 32)
    if count > limits.max_members:
        raise ArchiveError(f"{label}: lists {count} members, more than {limits.max_members}")
    if directory_size > (limits.max_members + 1) * _MAX_DIRECTORY_ENTRY:
        raise ArchiveError(f"{label}: central directory of {directory_size} bytes is too large")


def _zip_opener(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Opener:
    return lambda: archive.open(info)


def _zip_entries(
    archive: zipfile.ZipFile, label: str, limits: ExtractLimits
) -> tuple[list[tuple[zipfile.ZipInfo, Entry]], Layout]:
    """Check every central-directory entry before any byte is extracted."""
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise member_error(
            label,
            infos[limits.max_members].orig_filename,
            f"more than {limits.max_members} members",
        )
    layout = Layout(label, limits)
    declared = 0
    entries = []
    for info in infos:
        entry = _zip_entry(info, label, limits)
        layout.add(entry)
        declared += entry.size
        if declared > limits.max_total_bytes:
            raise member_error(
                label, entry.raw, f"archive expands past {limits.max_total_bytes} bytes"
            )
        entries.append((info, entry))
    return entries, layout


def _zip_entry(info: zipfile.ZipInfo, label: str, limits: ExtractLimits) -> Entry:
    raw = info.orig_filename  # keeps a NUL byte that ``filename`` silently cuts off
    if info.flag_bits & _ZIP_ENCRYPTED_FLAGS:
        raise member_error(label, raw, "is encrypted")
    mode = info.external_attr >> 16
    if problem := type_problem(mode):
        raise member_error(label, raw, problem)
    is_dir = raw.endswith("/")
    if stat.S_ISDIR(mode) and not is_dir:
        raise member_error(label, raw, "is marked as a folder but named like a file")
    entry = Entry(raw, safe_member_name(raw, label), is_dir, 0 if is_dir else info.file_size)
    check_declared_size(entry, label, limits)
    return entry


# -- tar / tar.gz -------------------------------------------------------------------------------


class _Seekable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...
    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int: ...
    def tell(self) -> int: ...


class _TarStream:
    """The (decompressed) tar bytes: caps how much may be read and watches the gzip ratio."""

    def __init__(self, inner: _Seekable, raw: _Seekable, label: str, limits: ExtractLimits):
        self.inner = inner
        self.raw = raw
        self.label = label
        self.limits = limits
        self.member: str | None = None
        self.last_block: tuple[int, bytes] = (-1, b"")
        # Data plus generous room for headers and padding.
        self.cap = limits.max_total_bytes + (limits.max_members + 1) * 2048 + (1 << 20)

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > _MAX_TAR_READ:
            raise self.error(f"tar header or read larger than {_MAX_TAR_READ} bytes")
        start = self.inner.tell()
        data = self.inner.read(size)
        if size == tarfile.BLOCKSIZE:
            self.last_block = (start, data)
        self.check()
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET and offset > self.cap:
            raise self.error(f"archive expands past {self.limits.max_total_bytes} bytes")
        position = self.inner.seek(offset, whence)
        self.check()
        return position

    def tell(self) -> int:
        return self.inner.tell()

    def check(self) -> None:
        position = self.inner.tell()
        if position > self.cap:
            raise self.error(f"archive expands past {self.limits.max_total_bytes} bytes")
        limits = self.limits
        if position > limits.ratio_grace_bytes and position > limits.max_ratio * max(
            self.raw.tell(), 1
        ):
            raise self.error(f"compression ratio above {limits.max_ratio:g}")

    def drain(self) -> None:
        """Read to the end so a truncated gzip stream or a bad CRC is noticed."""
        while self.inner.read(1 << 16):
            self.check()

    def error(self, reason: str) -> ArchiveError:
        if self.member is None:
            return ArchiveError(f"{self.label}: {reason}")
        return member_error(self.label, self.member, reason)


def _walk_tar(source: Path, kind: Kind, label: str, limits: ExtractLimits, visit: Visit) -> Layout:
    layout = Layout(label, limits)
    with open(source, "rb") as raw:
        inner: _Seekable = gzip.GzipFile(fileobj=raw, mode="rb") if kind == "tgz" else raw
        stream = _TarStream(inner, raw, label, limits)
        with reading_errors(label, lambda: stream.member):
            with tarfile.open(fileobj=stream, mode="r:") as archive:  # type: ignore[call-overload]
                declared = 0
                for info in archive:
                    stream.member = info.name
                    entry = _tar_entry(info, label, limits)
                    layout.add(entry)
                    declared += entry.size
                    if declared > limits.max_total_bytes:
                        raise stream.error(f"archive expands past {limits.max_total_bytes} bytes")
                    opener = None if entry.is_dir else _tar_opener(archive, info, label)
                    visit(entry, opener, None)
                stream.member = None
                _check_tar_end(archive, stream)
            stream.drain()
    return layout


def _tar_opener(archive: tarfile.TarFile, info: tarfile.TarInfo, label: str) -> Opener:
    def open_member() -> IO[bytes]:
        data = archive.extractfile(info)
        if data is None:  # pragma: no cover - regular files always have data
            raise member_error(label, info.name, "has no data")
        return data

    return open_member


def _tar_entry(info: tarfile.TarInfo, label: str, limits: ExtractLimits) -> Entry:
    raw = info.name
    if info.issym():
        raise member_error(label, raw, "is a symbolic link")
    if info.islnk():
        raise member_error(label, raw, "is a hard link")
    if info.ischr() or info.isblk():
        raise member_error(label, raw, "is a device")
    if info.isfifo():
        raise member_error(label, raw, "is a FIFO")
    if info.issparse() or not (info.isreg() or info.isdir()):
        raise member_error(label, raw, "has an unsupported member type")
    entry = Entry(raw, safe_member_name(raw, label), info.isdir(), info.size if info.isreg() else 0)
    check_declared_size(entry, label, limits)
    return entry


def _check_tar_end(archive: tarfile.TarFile, stream: _TarStream) -> None:
    """tarfile stops quietly at a corrupt or truncated header; insist on an end-of-archive block."""
    start, block = stream.last_block  # tarfile just read it; seeking back would re-inflate
    if start != archive.offset:
        stream.seek(archive.offset)
        block = stream.read(tarfile.BLOCKSIZE)
    if len(block) < tarfile.BLOCKSIZE or block.count(0) != tarfile.BLOCKSIZE:
        raise ArchiveError(f"{stream.label}: truncated or corrupt tar data after the last member")
