"""HTTPS on the REST listeners with TorchServe's keys, and plain HTTP to them refused as it does.

An ``https://`` address (``inference_address``, ``management_address``, ``metrics_address``)
serves TLS with ``private_key_file`` + ``certificate_file`` (PEM) or ``keystore`` +
``keystore_pass`` (``keystore_type`` PKCS12), as TorchServe's ``config.properties`` names them.
Each connection's first byte decides: a TLS record goes on to the handshake; anything else (a
plain HTTP request) gets TorchServe's answer, 403 "only accepts HTTPS requests", and is closed.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import tempfile
from asyncio import sslproto
from pathlib import Path
from typing import Any, cast

import orjson

from marserve.errors import ConfigError
from marserve.settings import ServerSettings

TLS_HANDSHAKE = 0x16  # the content type of a TLS record that opens a handshake
HANDSHAKE_TIMEOUT_S = 10  # the first byte, then the handshake, each within this
PLAIN_HTTP_MESSAGE = "This marserve instance only accepts HTTPS requests"


def _plain_http_answer() -> bytes:
    body = orjson.dumps({"code": 403, "type": "Forbidden", "message": PLAIN_HTTP_MESSAGE})
    head = (
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def server_context(settings: ServerSettings) -> ssl.SSLContext:
    """The TLS context of the REST listeners, from the PEM files or the PKCS12 keystore."""
    key, cert = settings.private_key_file, settings.certificate_file
    pem = key is not None and cert is not None
    if not pem and settings.keystore is None:
        raise ConfigError(
            "an https:// address needs private_key_file and certificate_file (PEM) "
            "or keystore and keystore_pass (PKCS12)"
        )
    if not pem and settings.keystore_type.upper() not in ("PKCS12", "P12"):
        raise ConfigError(
            f"keystore_type={settings.keystore_type}: marserve reads PKCS12 keystores "
            "(convert with keytool -importkeystore -deststoretype PKCS12)"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        if key is not None and cert is not None:
            context.load_cert_chain(str(cert), str(key))
        else:
            _load_keystore(context, settings)
    except ConfigError:
        raise
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"cannot load the TLS key and certificate: {exc}") from None
    return context


def _load_keystore(context: ssl.SSLContext, settings: ServerSettings) -> None:
    try:
        from cryptography.hazmat.primitives.serialization import (
            BestAvailableEncryption,
            Encoding,
            PrivateFormat,
            pkcs12,
        )
    except ImportError:
        raise ConfigError(
            "a PKCS12 keystore needs the cryptography package: pip install 'marserve[tls]' "
            "(or give private_key_file and certificate_file as PEM)"
        ) from None

    assert settings.keystore is not None
    password = (settings.keystore_pass or "").encode()
    key, cert, chain = pkcs12.load_key_and_certificates(
        settings.keystore.read_bytes(), password or None
    )
    if key is None or cert is None:
        raise ValueError(f"{settings.keystore} holds no private key and certificate")
    secret = os.urandom(24).hex().encode()  # the key never touches the disk in the clear
    with tempfile.TemporaryDirectory(prefix="marserve-tls-") as folder:
        pem = Path(folder) / "chain.pem"
        fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(
                key.private_bytes(
                    Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(secret)
                )
            )
            for certificate in (cert, *chain):
                out.write(certificate.public_bytes(Encoding.PEM))
        context.load_cert_chain(str(pem), password=secret)


class _TlsOnly(asyncio.Protocol):
    """Holds a new connection until its first byte: TLS goes to the handshake, then to the
    HTTP protocol; anything else is answered 403 and closed."""

    INNER: type[asyncio.Protocol]
    CONTEXT: ssl.SSLContext
    FIRST_BYTE_TIMEOUT_S: float = HANDSHAKE_TIMEOUT_S

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        # a connection that sends nothing must not be held open for ever
        self._timer = asyncio.get_running_loop().call_later(
            self.FIRST_BYTE_TIMEOUT_S, transport.close
        )

    def _decided(self) -> None:
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or not data:
            return
        self._decided()  # this protocol is done with the connection
        if data[0] != TLS_HANDSHAKE:
            transport.write(_plain_http_answer())
            transport.close()
            return
        inner = self.INNER(**self._kwargs)
        loop = asyncio.get_running_loop()
        handshake: asyncio.Future[None] = loop.create_future()
        handshake.add_done_callback(_retrieve)  # a failed handshake is the client's business
        tls = sslproto.SSLProtocol(
            loop,
            inner,
            self.CONTEXT,
            handshake,
            server_side=True,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
        )
        transport.set_protocol(tls)
        tls.connection_made(transport)
        view = memoryview(data)
        while view:  # the bytes already read are the start of the handshake
            buffer = tls.get_buffer(len(view))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            tls.buffer_updated(size)
            view = view[size:]

    def eof_received(self) -> bool | None:
        return None  # closed before a byte: nothing to answer

    def connection_lost(self, exc: Exception | None) -> None:
        self._decided()


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def tls_only(inner: type[asyncio.Protocol], context: ssl.SSLContext) -> type[asyncio.Protocol]:
    """The protocol class for an HTTPS listener: ``inner`` (uvicorn's, with marserve's limits)
    behind TLS, plain HTTP refused."""
    return type("TlsListenerProtocol", (_TlsOnly,), {"INNER": inner, "CONTEXT": context})
