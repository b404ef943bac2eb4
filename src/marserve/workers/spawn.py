"""Worker processes: spawned fresh on a socket pair, and pre-started at launch (WarmProcesses)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys

Spawned = tuple[asyncio.subprocess.Process, asyncio.StreamReader, asyncio.StreamWriter]


async def spawn_process() -> Spawned:
    """A fresh worker interpreter (spawn semantics) connected over an inherited socket pair."""
    parent, child = socket.socketpair()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "marserve.workers.child",
            "--fd",
            str(child.fileno()),
            pass_fds=(child.fileno(),),
            stdin=asyncio.subprocess.DEVNULL,
        )
    finally:
        child.close()
    reader, writer = await asyncio.open_connection(sock=parent)
    return process, reader, writer


class WarmProcesses:
    """Worker processes started first thing, so that their ``import torch`` (the bulk of a cold
    start) overlaps with the front's own start-up. Workers take them before spawning new ones."""

    def __init__(self) -> None:
        self._ready: list[Spawned] = []

    async def start(self, count: int) -> None:
        self._ready += await asyncio.gather(*(spawn_process() for _ in range(max(0, count))))

    def take(self) -> Spawned | None:
        while self._ready:
            spawned = self._ready.pop()
            if spawned[0].returncode is None:
                return spawned
        return None

    async def close(self) -> None:
        """Stop the ones nobody took."""
        while self._ready:
            process, _, writer = self._ready.pop()
            writer.close()
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
