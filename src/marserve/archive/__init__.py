"""Model archives (.mar): the manifest, creating archives, and opening/extracting them safely."""

from marserve.archive.create import (
    ARCHIVE_FORMATS,
    BUILTIN_HANDLERS,
    LARGE_FILE_BYTES,
    RUNTIMES,
    ProgressHook,
    archive_path,
    create_archive,
)
from marserve.archive.manifest import (
    ARCHIVER_VERSION,
    KNOWN_RUNTIMES,
    MANIFEST_PATH,
    PYTHON_RUNTIMES,
    Manifest,
)
from marserve.archive.members import DEFAULT_LIMITS, ExtractLimits
from marserve.archive.reader import (
    ExtractedArchive,
    extract_archive,
    list_members,
    read_manifest,
    unpack_archive,
)

__all__ = [
    "ARCHIVER_VERSION",
    "ARCHIVE_FORMATS",
    "BUILTIN_HANDLERS",
    "DEFAULT_LIMITS",
    "KNOWN_RUNTIMES",
    "LARGE_FILE_BYTES",
    "MANIFEST_PATH",
    "PYTHON_RUNTIMES",
    "RUNTIMES",
    "ExtractLimits",
    "ExtractedArchive",
    "Manifest",
    "ProgressHook",
    "archive_path",
    "create_archive",
    "extract_archive",
    "list_members",
    "read_manifest",
    "unpack_archive",
]
