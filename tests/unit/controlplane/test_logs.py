"""Pod log helpers: tailLines table, path safety, follow sees appended bytes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from marserve.controlplane.api.logs import follow, log_path, tail
from marserve.controlplane.errors import BadRequest, NotFound


@pytest.mark.parametrize(
    ("lines", "want"),
    [(None, b"a\nb\nc\n"), (0, b""), (1, b"c\n"), (2, b"b\nc\n"), (9, b"a\nb\nc\n")],
)
def test_tail(lines: int | None, want: bytes) -> None:
    assert tail(b"a\nb\nc\n", lines) == want


def test_log_path_and_follow(tmp_path: Path) -> None:
    with pytest.raises(BadRequest):
        log_path(tmp_path, "..", "p", None)
    with pytest.raises(NotFound):
        log_path(tmp_path, "ns", "p", None)
    d = tmp_path / "ns" / "p"
    d.mkdir(parents=True)
    (d / "kserve-container.log").write_bytes(b"one\n")
    path = log_path(tmp_path, "ns", "p", None)

    async def main() -> bytes:
        gen = follow(path, 4, poll_s=0.01)
        with path.open("ab") as f:
            f.write(b"two\n")
        return await asyncio.wait_for(gen.__anext__(), 5)

    assert asyncio.run(main()) == b"two\n"
