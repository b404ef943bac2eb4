"""Length-prefixed pickle frames over a socket pair, blocking (child) and asyncio (front)."""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!Q")
MAX_FRAME = 1 << 33  # 8 GiB: a corrupt length must not make us allocate the world


class ConnectionClosed(ConnectionError):
    """The peer closed the socket (a worker died, or the front went away)."""


def encode(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = sock.recv_into(view[received:])
        if count == 0:
            raise ConnectionClosed("peer closed the connection")
        received += count
    return bytes(buffer)


def send(sock: socket.socket, message: Any) -> None:
    """Blocking send of one frame (worker side)."""
    sock.sendall(encode(message))


def recv(sock: socket.socket) -> Any:
    """Blocking receive of one frame (worker side)."""
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    if size > MAX_FRAME:
        raise ConnectionClosed(f"frame of {size} bytes exceeds the limit")
    return pickle.loads(_recv_exact(sock, size))  # noqa: S301 - our own worker's frames


async def read_message(reader: asyncio.StreamReader) -> Any:
    """Receive one frame (front side). Raises ConnectionClosed on EOF."""
    try:
        (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
        if size > MAX_FRAME:
            raise ConnectionClosed(f"frame of {size} bytes exceeds the limit")
        payload = await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise ConnectionClosed("worker closed the connection") from exc
    return pickle.loads(payload)  # noqa: S301 - our own worker's frames
