"""The storage interface: settings, the pull result, remote objects and the Remote protocol."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from marserve.errors import MarserveError

DEFAULT_CACHE_DIR = Path("~/.cache/marserve/storage")
# Called with the number of bytes that just arrived
Progress = Callable[[int], None]


class StorageError(MarserveError):
    """A pull that failed. ``str(err)`` is one line naming the URI and the reason, and never
    holds a credential: it becomes an InferenceService's ``lastFailureInfo.message``.
    """

    def __init__(self, uri: str, reason: str) -> None:
        line = " ".join(f"Cannot pull {uri[:300]}: {reason}".split())
        super().__init__(line, http_status=502)
        self.uri = uri
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """How pulls run. ``env`` holds credentials and endpoints under KServe's variable names;
    the CLI passes ``os.environ``, a library caller passes what it means to."""

    cache_dir: Path = DEFAULT_CACHE_DIR
    pvc: Mapping[str, Path] = field(default_factory=dict)
    max_bytes: int = 20 << 30  # 20 GiB for one model store
    timeout_s: float = 1800.0  # the whole pull
    env: Mapping[str, str] = field(default_factory=dict)
    retries: int = 4  # attempts after the first, with exponential backoff


@dataclass(frozen=True, slots=True)
class PullResult:
    """``path`` holds ``config/`` and ``model-store/``: the original folder for pvc:// and local
    paths, ``dest`` otherwise. ``cached`` when nothing was downloaded."""

    path: Path
    cached: bool
    bytes_downloaded: int


@dataclass(frozen=True, slots=True)
class RemoteObject:
    """One object below a URI: ``key`` relative to the URI's prefix, ``version`` the store's
    ETag / generation / version id (what makes the cache key change when the object does)."""

    key: str
    size: int
    version: str
    name: str  # the store's own full name of the object


class Remote(Protocol):
    """One storage scheme: list what a URI names, and fetch one of those objects to a file."""

    def list(self) -> list[RemoteObject]:
        """Every object the URI names; StorageError when there is none or it cannot be read."""

    def fetch(self, obj: RemoteObject, target: Path, progress: Progress) -> None:
        """Write ``obj`` to the new file ``target``, calling ``progress`` with byte counts."""

    def close(self) -> None:
        """Release the client's connections."""


@dataclass(frozen=True, slots=True)
class Deadline:
    """The pull's time bound, as seconds left, on an injected monotonic clock."""

    end: float
    clock: Callable[[], float]

    def left(self) -> float:
        return self.end - self.clock()

    def expired(self) -> bool:
        return self.left() <= 0
