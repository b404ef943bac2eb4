"""The HTTPS listener's first-byte decision and the TLS context from TorchServe's keys."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import trustme

from marserve.errors import ConfigError
from marserve.rest.tls import PLAIN_HTTP_MESSAGE, server_context, tls_only
from marserve.settings import ServerSettings


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class Inner(asyncio.Protocol):
    made = 0

    def __init__(self, **kwargs: Any) -> None:
        Inner.made += 1


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pem")
    issued = trustme.CA().issue_cert("127.0.0.1")
    issued.private_key_pem.write_to_path(str(folder / "k.pem"))
    issued.cert_chain_pems[0].write_to_path(str(folder / "c.pem"))
    return folder / "k.pem", folder / "c.pem"


def protocol(pem: tuple[Path, Path], timeout: float = 5.0) -> Any:
    context = server_context(ServerSettings(private_key_file=pem[0], certificate_file=pem[1]))
    cls = tls_only(Inner, context)
    cls.FIRST_BYTE_TIMEOUT_S = timeout
    return cls(config=None)


def test_plain_http_gets_torchserves_403_and_is_closed(pem: tuple[Path, Path]) -> None:
    async def scenario() -> Transport:
        transport = Transport()
        proto = protocol(pem)
        proto.connection_made(transport)
        proto.data_received(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        return transport

    transport = asyncio.run(scenario())
    assert transport.written.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert PLAIN_HTTP_MESSAGE.encode() in transport.written and transport.closed
    assert Inner.made == 0  # the HTTP protocol never saw the connection


def test_a_silent_connection_is_closed_after_the_first_byte_timeout(pem: tuple[Path, Path]) -> None:
    async def scenario() -> Transport:
        transport = Transport()
        protocol(pem, timeout=0.05).connection_made(transport)
        deadline = asyncio.get_running_loop().time() + 5
        while not transport.closed and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        return transport

    transport = asyncio.run(scenario())
    assert transport.closed and transport.written == b""


def test_keys_are_required_and_checked(pem: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs private_key_file and certificate_file"):
        server_context(ServerSettings())
    with pytest.raises(ConfigError, match="cannot load the TLS key"):
        server_context(ServerSettings(private_key_file=pem[1], certificate_file=pem[1]))
    with pytest.raises(ConfigError, match="cannot load the TLS key"):
        server_context(ServerSettings(private_key_file=tmp_path / "no", certificate_file=pem[1]))
    junk = tmp_path / "junk.p12"
    junk.write_bytes(b"not a keystore")
    with pytest.raises(ConfigError, match="cannot load the TLS key"):
        server_context(ServerSettings(keystore=junk, keystore_pass="x"))
    with pytest.raises(ConfigError, match="reads PKCS12"):
        server_context(ServerSettings(keystore=junk, keystore_type="JKS"))
