"""Write model archives (.mar, tar.gz or a folder) with torch-model-archiver 0.12's layout."""

from __future__ import annotations

import glob
import logging
import os
import secrets
import shutil
import stat
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO

from marserve.archive.manifest import MANIFEST_PATH, Manifest, valid_model_name
from marserve.errors import ArchiveError

logger = logging.getLogger(__name__)

ARCHIVE_FORMATS = ("default", "tgz", "no-archive", "zip-store")
_SUFFIXES = {"default": ".mar", "zip-store": ".mar", "tgz": ".tar.gz", "no-archive": ""}
RUNTIMES = ("python", "python3", "LSP")
# Handler names torch-model-archiver 0.12 knows; no file is packed for them.
BUILTIN_HANDLERS = frozenset(
    {
        "base_handler",
        "image_classifier",
        "object_detector",
        "text_classifier",
        "image_segmenter",
        "dali_image_classifier",
        "vllm_handler",
        "trt_llm_handler",
    }
)
_LSP_BUILTIN_HANDLERS = frozenset({"BaseHandler", "TorchScriptHandler"})
# Folders torch-model-archiver leaves out (at any depth), besides those starting with ".".
_SKIPPED_DIRS = frozenset({"__MACOSX", "__pycache__"})
LARGE_FILE_BYTES = 100 << 20  # the CLI shows a progress bar from this serialized-file size
_CHUNK = 1 << 20

# progress(advance_bytes, total_bytes) while member data is written
ProgressHook = Callable[[int, int], None]
PathLike = str | os.PathLike[str]


def create_archive(
    *,
    model_name: str,
    handler: str,
    version: str | None = None,
    serialized_file: PathLike | None = None,
    model_file: PathLike | None = None,
    extra_files: str | Sequence[PathLike] | None = None,
    requirements_file: PathLike | None = None,
    config_file: PathLike | None = None,
    runtime: str = "python",
    export_path: PathLike | None = None,
    archive_format: str = "default",
    force: bool = False,
    progress: ProgressHook | None = None,
    created_on: datetime | None = None,
) -> Path:
    """Write ``<export_path>/<model_name>.mar`` (or ``.tar.gz``, or a folder); return its path.

    Arguments mirror torch-model-archiver's flags; ``extra_files`` is its comma-separated string
    (globs allowed) or a list. Files land at the archive root, an extra folder's contents too.
    """
    _check_options(model_name, runtime, archive_format)
    export_dir = Path(export_path) if export_path is not None else Path.cwd()
    if not export_dir.is_dir():
        raise ArchiveError(f"export path {export_dir} is not a folder")
    dest = export_dir / f"{model_name}{_SUFFIXES[archive_format]}"
    if os.path.lexists(dest) and not force:
        raise ArchiveError(f"{dest} already exists; use --force/-f to overwrite it")
    members = _collect(
        [
            ("model file", model_file),
            ("serialized file", serialized_file),
            *(("handler file", path) for path in _handler_file(handler, runtime)),
            *(("extra file", path) for path in _extra_paths(extra_files)),
            ("requirements file", requirements_file),
            ("config file", config_file),
        ]
    )
    manifest = Manifest.build(
        model_name=model_name,
        handler=_manifest_handler(handler),
        runtime=runtime,
        model_version=version or None,
        serialized_file=_base(serialized_file),
        model_file=_base(model_file),
        requirements_file=_base(requirements_file),
        config_file=_base(config_file),
        created_on=created_on,
    )
    if archive_format != "no-archive" and dest.is_dir() and not dest.is_symlink():
        raise ArchiveError(f"{dest} is a folder; remove it first")
    try:
        writer = _Writer(members, manifest.to_json(), progress)
        if archive_format == "no-archive":
            writer.folder(dest)
        elif archive_format == "tgz":
            writer.tgz(dest, model_name)
        else:
            stored = archive_format == "zip-store"
            writer.zip(dest, zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
    except OSError as exc:
        raise ArchiveError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    logger.info("wrote model archive %s", dest)
    return dest


def archive_path(model_name: str, export_path: PathLike, archive_format: str = "default") -> Path:
    """Where ``create_archive`` writes for these options."""
    return Path(export_path) / f"{model_name}{_SUFFIXES[archive_format]}"


def _check_options(model_name: str, runtime: str, archive_format: str) -> None:
    if not valid_model_name(model_name):
        raise ArchiveError(
            f"model name {model_name!r} has characters not allowed "
            r"(it must match ^[A-Za-z0-9][A-Za-z0-9_\-.]*$)"
        )
    if runtime not in RUNTIMES:
        raise ArchiveError(f"unknown runtime {runtime!r} (one of {', '.join(RUNTIMES)})")
    if archive_format not in _SUFFIXES:
        raise ArchiveError(f"unknown archive format {archive_format!r}")


def _base(path: PathLike | None) -> str | None:
    return os.path.basename(os.fspath(path)) if path else None


def _manifest_handler(handler: str) -> str:
    """The manifest's handler: the module's file name, keeping ``:function`` (TMA's basename)."""
    module, sep, function = handler.partition(":")
    return os.path.basename(module) + sep + function


def _handler_file(handler: str, runtime: str) -> list[str]:
    """The file packed for ``--handler``: none for a built-in name, else the module's file."""
    if runtime == "LSP":
        if handler in _LSP_BUILTIN_HANDLERS:
            return []
        module = handler.split(":", 1)[0]
        suffix = ".dylib" if sys.platform.startswith("darwin") else ".so"
        return [module if module.endswith(suffix) else module + suffix]
    if handler in BUILTIN_HANDLERS:
        return []
    module = handler.split(":", 1)[0]
    return [module if module.endswith(".py") else module + ".py"]


def _extra_paths(extra_files: str | Sequence[PathLike] | None) -> list[str]:
    """Expand ``--extra-files``: comma-separated paths or globs, as torch-model-archiver does."""
    if not extra_files:
        return []
    items = extra_files.split(",") if isinstance(extra_files, str) else extra_files
    found: list[str] = []
    for item in items:
        pattern = os.fspath(item).strip()
        if not pattern:
            continue
        wildcard = any(c in pattern for c in "*?") or ("[" in pattern and "]" in pattern)
        if not wildcard and not os.path.exists(pattern):
            raise ArchiveError(f"extra file {pattern} does not exist")
        matches = sorted(glob.glob(pattern)) if wildcard else [pattern]
        if not matches:
            logger.warning("extra-files pattern %s matched no file", pattern)
        found.extend(matches)
    return found


def _collect(items: Iterable[tuple[str, PathLike | None]]) -> dict[str, Path]:
    """Archive name -> source file; a later file of the same name wins, as in TMA."""
    members: dict[str, Path] = {}
    for what, item in items:
        if item is None or not os.fspath(item):
            continue
        path = Path(item)
        if what == "extra file" and path.is_dir():
            members.update(_folder_members(path))
        elif path.is_file():
            members[path.name] = path
        else:
            raise ArchiveError(f"{what} {path} does not exist or is not a file")
    _check_members(members)
    return members


def _folder_members(folder: Path) -> dict[str, Path]:
    """An extra folder's contents, placed at the archive root (its name is not kept)."""
    members: dict[str, Path] = {}
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a symlink loop
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS and not d.startswith("."))
        rel = Path(root).relative_to(folder)
        for name in sorted(files):
            source = Path(root, name)
            if source.is_file():
                members[(rel / name).as_posix()] = source
    return members


def _check_members(members: dict[str, Path]) -> None:
    if MANIFEST_PATH in members:
        raise ArchiveError(f"{members[MANIFEST_PATH]} would replace the archive's {MANIFEST_PATH}")
    for name in members:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in members:
                raise ArchiveError(f"{members[parent]} clashes with the folder of {name}")


class _Writer:
    """Writes the collected members and the manifest in one of the three layouts."""

    def __init__(self, members: dict[str, Path], manifest: bytes, progress: ProgressHook | None):
        self.members = dict(sorted(members.items()))
        self.manifest = manifest
        self.progress = progress
        self.total = sum(path.stat().st_size for path in self.members.values())

    def zip(self, dest: Path, compression: int) -> None:
        with _replacing(dest) as out, zipfile.ZipFile(out, "w", compression) as archive:
            for name, source in self.members.items():
                info = zipfile.ZipInfo.from_file(source, name, strict_timestamps=False)
                info.compress_type = compression
                with open(source, "rb") as src, archive.open(info, "w") as dst:
                    self._copy(src, dst)
            archive.writestr(MANIFEST_PATH, self.manifest)

    def tgz(self, dest: Path, model_name: str) -> None:
        with (
            _replacing(dest) as out,
            tarfile.open(name=dest, mode="w:gz", fileobj=out) as archive,
        ):
            for name, source in self.members.items():
                st = source.stat()
                info = tarfile.TarInfo(f"{model_name}/{name}")
                info.size, info.mtime = st.st_size, int(st.st_mtime)
                info.mode = stat.S_IMODE(st.st_mode) & 0o777
                with open(source, "rb") as src:
                    archive.addfile(info, _ProgressReader(src, self._advance))
            info = tarfile.TarInfo(f"{model_name}/{MANIFEST_PATH}")
            info.size, info.mtime = len(self.manifest), int(time.time())
            archive.addfile(info, _BytesReader(self.manifest))

    def folder(self, dest: Path) -> None:
        created = not dest.exists()
        try:
            for name, source in self.members.items():
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(source, "rb") as src, _open_new(target) as dst:
                    self._copy(src, dst)
                shutil.copymode(source, target)
            (dest / MANIFEST_PATH).parent.mkdir(parents=True, exist_ok=True)
            with _open_new(dest / MANIFEST_PATH) as dst:
                dst.write(self.manifest)
        except BaseException:
            if created:
                shutil.rmtree(dest, ignore_errors=True)
            raise

    def _copy(self, src: IO[bytes], dst: IO[bytes]) -> None:
        while chunk := src.read(_CHUNK):
            dst.write(chunk)
            self._advance(len(chunk))

    def _advance(self, size: int) -> None:
        if self.progress is not None and size:
            self.progress(size, self.total)


class _ProgressReader:
    """A file wrapper that reports each read to the progress hook (tarfile reads in chunks)."""

    def __init__(self, stream: IO[bytes], advance: Callable[[int], None]) -> None:
        self.stream = stream
        self.advance = advance

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.advance(len(data))
        return data


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, size: int = -1) -> bytes:
        chunk = self.data if size < 0 else self.data[:size]
        self.data = self.data[len(chunk) :]
        return chunk


def _open_new(path: Path) -> IO[bytes]:
    """Open for writing, replacing a regular file but never following a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(path, flags, 0o666), "wb")


@contextmanager
def _replacing(dest: Path) -> Iterator[IO[bytes]]:
    """A temporary file beside ``dest`` that replaces it atomically on success."""
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        with os.fdopen(os.open(tmp, flags, 0o666), "wb") as out:
            yield out
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
