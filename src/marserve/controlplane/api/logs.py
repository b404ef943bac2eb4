"""Pod logs: ``MARSERVE_HOME/pods/NAMESPACE/POD/CONTAINER.log``, with tailLines and follow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from marserve.controlplane.errors import BadRequest, NotFound

CONTAINER = "kserve-container"


def log_path(pods_dir: Path, namespace: str, pod: str, container: str | None) -> Path:
    """The log file of one container; the name parts may not leave ``pods_dir``."""
    name = container or CONTAINER
    for part in (namespace, pod, name):
        if not part or "/" in part or part in (".", ".."):
            raise BadRequest(f"invalid name in log path: {part!r}")
    path = pods_dir / namespace / pod / f"{name}.log"
    if not path.is_file():
        raise NotFound(f'container "{name}" in pod "{pod}" has no logs')
    return path


def tail(data: bytes, lines: int | None) -> bytes:
    """The last ``lines`` lines of ``data`` (all when ``None``)."""
    if lines is None:
        return data
    if lines <= 0:
        return b""
    return b"".join(data.splitlines(keepends=True)[-lines:])


async def follow(path: Path, start: int, poll_s: float = 0.2) -> AsyncIterator[bytes]:
    """Bytes appended to ``path`` after offset ``start``, until the client goes away."""
    offset = start
    while True:
        with path.open("rb") as f:
            f.seek(offset)
            chunk = f.read()
        if chunk:
            offset += len(chunk)
            yield chunk
        else:
            await asyncio.sleep(poll_s)
