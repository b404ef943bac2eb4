"""ModelStore: what is on disk in the model store, resolved without ever leaving it."""

from __future__ import annotations

from pathlib import Path

from marserve.errors import InvalidInput, NotFound

ARCHIVE_SUFFIXES = (".mar", ".tar.gz", ".tgz", ".zip")


class ModelStore:
    """The folder of ``.mar`` archives (and unpacked model folders) named by ``model_store``."""

    def __init__(self, root: Path | None) -> None:
        self.root = root.resolve() if root is not None else None

    def resolve(self, name: str) -> Path:
        """The archive or folder ``name`` inside the store; never a path outside it."""
        if self.root is None:
            raise NotFound("No model store is configured")
        if not name or "\x00" in name or "\\" in name or name.startswith("/"):
            raise InvalidInput(f"Invalid model archive name: {name[:100]!r}")
        if any(part in ("..", "") for part in name.split("/")):
            raise InvalidInput(f"Invalid model archive name: {name[:100]!r}")
        candidate = (self.root / name).resolve()
        if not candidate.is_relative_to(self.root):
            raise InvalidInput(f"Invalid model archive name: {name[:100]!r}")
        if not candidate.exists():
            raise NotFound(f"Model archive {name[:100]!r} is not in the model store")
        return candidate

    def archives(self) -> list[Path]:
        """Every archive in the store, for ``load_models=all``."""
        if self.root is None or not self.root.is_dir():
            return []
        found = [
            path
            for path in sorted(self.root.iterdir())
            if (path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES))
            or (path.is_dir() and (path / "MAR-INF" / "MANIFEST.json").is_file())
        ]
        return found


def model_name_from_archive(path: Path) -> str:
    """The default model name for an archive: its file name without the suffix."""
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
