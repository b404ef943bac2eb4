"""Where a model registration may come from: the model store, or an allowed http(s) URL.

Every URL is checked on its parsed, normalised form before any I/O, and again on every redirect:
only http and https, no userinfo, no backslashes or ``..`` segments, and a full match of one of the
``allowed_urls`` regexes (none configured: every remote URL is refused). Downloads are bounded in
size and time and land in the model store under the URL's file name.

Addresses are checked too, for the first URL and for every redirect hop, before connecting. A host
*name* is resolved once (``getaddrinfo``, off the event loop) and refused (403) when any of its
addresses is loopback, link-local (the cloud metadata service 169.254.169.254 included),
unspecified (0.0.0.0/8, ::), multicast or reserved; an IPv4 address inside an IPv4-mapped
(``::ffff:127.0.0.1``) or NAT64 (``64:ff9b::/96``) address is judged as itself. Private RFC 1918
and ULA addresses stay allowed: in-cluster registries such as MinIO live there. The connection
then goes to the address that was checked, not to the name again, so a DNS answer that changes
between check and fetch cannot move it: the request names the IP, and the name stays in ``Host``
and, for https, in TLS SNI and certificate verification. An IP-literal host is the operator's own
choice through ``allowed_urls`` and is connected to as written, except unspecified and multicast
addresses, which never are. Redirect locations are resolved against the name-based URL and pass
every check again. Downloads connect directly: proxy settings from the environment are not used,
since a proxy would resolve the name itself, out of reach of these checks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import posixpath
import re
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeAlias
from urllib.parse import unquote, urljoin, urlsplit

from marserve.errors import Conflict, Forbidden, InvalidInput, MarserveError, PayloadTooLarge
from marserve.repository import ARCHIVE_SUFFIXES, ModelStore

if TYPE_CHECKING:
    import httpx

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}")
MAX_REDIRECTS = 5

Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
# Every address a host name has, as text; the default asks the system (getaddrinfo).
Resolver: TypeAlias = Callable[[str], Awaitable[Sequence[str]]]

# 0.0.0.0/8 is "this network": Linux connects 0.0.0.0 to the local host itself.
THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
# Kinds refused even as an IP literal that allowed_urls matched: never a real download host.
ALWAYS_REFUSED = frozenset({"unspecified", "multicast"})


class DownloadFailed(InvalidInput):
    """A download that failed on the wire; ``retryable`` for connection errors and HTTP 5xx."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class DownloadLimits:
    max_bytes: int = 2 << 30  # 2 GiB
    timeout_s: float = 300.0  # the whole download
    connect_timeout_s: float = 10.0  # resolving a host, and again connecting to it


def check_model_name(name: str, what: str = "model name") -> str:
    """A name that is safe as a path segment and a metric label: ``[A-Za-z0-9][A-Za-z0-9_.-]*``."""
    if not MODEL_NAME.fullmatch(name):
        raise InvalidInput(
            f"Invalid {what} {name[:100]!r}: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit"
        )
    return name


def is_remote(url: str) -> bool:
    return "://" in url or url.lower().startswith(("file:", "jar:", "s3:", "gs:"))


def checked_url(url: str, allowed: tuple[str, ...]) -> str:
    """The normalised URL when it may be fetched; Forbidden otherwise (before any I/O)."""
    shown = url[:200]
    if "\\" in url or any(ord(c) < 0x21 for c in url):
        raise Forbidden(f"URL not allowed: {shown}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Forbidden(f"URL scheme not allowed: {shown}")
    if "@" in parts.netloc or not parts.hostname:
        raise Forbidden(f"URL not allowed (userinfo or no host): {shown}")
    segments = unquote(parts.path).split("/")
    if ".." in segments or "." in segments:
        raise Forbidden(f"URL not allowed (path traversal): {shown}")
    host = parts.hostname
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    normalised = f"{scheme}://{netloc}{parts.path or '/'}"
    if parts.query:
        normalised += f"?{parts.query}"
    if not any(re.fullmatch(pattern, normalised) for pattern in allowed):
        raise Forbidden(f"URL not allowed by allowed_urls: {shown}")
    return normalised


async def system_resolver(host: str) -> list[str]:
    """Every address of ``host``; getaddrinfo blocks, so it runs in the event loop's executor."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def address_kind(address: Address) -> str | None:
    """The kind of address a download by name must not reach, or None when it may be fetched.

    An IPv4-mapped or NAT64 address reaches the IPv4 address inside it, so that one is judged:
    ``::ffff:127.0.0.1`` is loopback (``ipaddress`` alone calls it merely reserved, or nothing).
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address in NAT64:
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    kinds = (
        ("unspecified", address.is_unspecified or address in THIS_NETWORK),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
    )
    return next((kind for kind, matches in kinds if matches), None)


def _an(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _shown(address: Address) -> str:
    """``::ffff:127.0.0.1`` rather than Python 3.11's ``::ffff:7f00:1``: the form people read."""
    mapped = getattr(address, "ipv4_mapped", None)
    return f"::ffff:{mapped}" if mapped is not None else str(address)


def _ip_literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Hop:
    """One request of a download: where it connects, and how the host name travels with it.

    ``url`` is the name-based URL (what redirects resolve against and messages show);
    ``connect_url`` names the checked address, so nothing resolves the name a second time.
    """

    url: str
    connect_url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)

    def stream(self, client: httpx.AsyncClient) -> AbstractAsyncContextManager[httpx.Response]:
        return client.stream(
            "GET", self.connect_url, headers=self.headers, extensions=self.extensions
        )


def pin(url: str, address: Address) -> Hop:
    """The hop for ``url`` connecting to ``address``, with the name kept in Host and TLS.

    httpcore's ``sni_hostname`` request extension sets the TLS server name, which is also the name
    the certificate is verified against; without it https would check the certificate for the IP.
    """
    parsed = _parse(url)
    name = parsed.raw_host.decode("ascii")
    extensions = {"sni_hostname": name} if parsed.scheme == "https" else {}
    connect_url = str(parsed.copy_with(host=str(address)))
    return Hop(url, connect_url, {"Host": parsed.netloc.decode("ascii")}, extensions)


async def next_hop(url: str, resolve: Resolver, timeout_s: float) -> Hop:
    """The hop for a URL that passed ``checked_url``: its host resolved once and its addresses
    checked (Forbidden before any connection), or an IP literal taken as the operator allowed it.
    """
    host = _parse(url).raw_host.decode("ascii")
    literal = _ip_literal(host)
    if literal is not None:
        kind = address_kind(literal)
        if kind in ALWAYS_REFUSED:
            raise Forbidden(f"URL not allowed: {host} is {_an(kind)} address")
        return Hop(url, url)
    addresses = await _resolve(host, resolve, timeout_s)
    for address in addresses:
        kind = address_kind(address)
        if kind is not None:
            raise Forbidden(
                f"URL not allowed: host {host} resolves to {_an(kind)} address ({_shown(address)})"
            )
    return pin(url, addresses[0])


async def _resolve(host: str, resolve: Resolver, timeout_s: float) -> list[Address]:
    try:
        answers = await asyncio.wait_for(resolve(host), timeout_s)
    except asyncio.TimeoutError:
        raise MarserveError(f"Timed out resolving host {host}", http_status=504) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InvalidInput(f"Download failed: cannot resolve host {host} ({reason})") from None
    if not answers:
        raise InvalidInput(f"Download failed: host {host} has no addresses")
    return [ipaddress.ip_address(answer) for answer in answers]


def _parse(url: str) -> httpx.URL:
    import httpx  # see download()

    try:
        return httpx.URL(url)
    except httpx.InvalidURL:
        raise InvalidInput(f"Invalid URL: {url[:200]}") from None


def archive_file_name(url: str) -> str:
    name = posixpath.basename(unquote(urlsplit(url).path))
    if not name.endswith(ARCHIVE_SUFFIXES):
        raise InvalidInput(f"URL does not name a model archive (.mar): {url[:200]}")
    check_model_name(name, "archive file name")
    return name


async def download(
    url: str,
    store: ModelStore,
    allowed: tuple[str, ...],
    limits: DownloadLimits,
    *,
    resolve: Resolver = system_resolver,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Path:
    """Fetch an allowed URL into the model store; refuses an existing file (409).

    ``resolve`` and ``transport`` are where tests put a fake DNS and a recording transport. The
    default transport connects directly (an explicit transport keeps httpx from applying proxy
    environment variables) and keeps no idle connection, so no hop reuses a TLS session that was
    verified for another host name on the same address.
    """
    first = checked_url(url, allowed)
    if store.root is None:
        raise InvalidInput("No model store is configured to download into")
    target = store.root / archive_file_name(first)
    if target.exists():
        raise Conflict(f"Model archive {target.name} already exists in the model store")
    fd, partial = tempfile.mkstemp(prefix=".download-", dir=store.root)
    try:
        with os.fdopen(fd, "wb") as out:
            await fetch_url(first, out, allowed, limits, resolve=resolve, transport=transport)
        os.link(partial, target)  # fails if the name appeared meanwhile: never overwrite
    except FileExistsError:
        raise Conflict(f"Model archive {target.name} already exists in the model store") from None
    finally:
        os.unlink(partial)
    return target


async def fetch_url(
    url: str,
    out: BinaryIO,
    allowed: tuple[str, ...],
    limits: DownloadLimits,
    *,
    headers: dict[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
    resolve: Resolver = system_resolver,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Write the body of an allowed URL (already passed by ``checked_url``) to ``out``, with
    every address check of ``download``; ``headers`` go with every hop, ``verify`` is httpx's
    (an SSLContext, or False). Errors are MarserveErrors naming the URL.
    """
    import httpx

    timeout = httpx.Timeout(limits.timeout_s, connect=limits.connect_timeout_s)
    if transport is None:
        transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_keepalive_connections=0), verify=verify
        )
    try:
        async with (
            httpx.AsyncClient(
                transport=transport, follow_redirects=False, timeout=timeout
            ) as client,
            asyncio.timeout(limits.timeout_s),  # the whole download: trickling included
        ):
            await _fetch(client, url, allowed, out, limits, resolve, headers or {})
    except (httpx.TimeoutException, TimeoutError):
        raise MarserveError(f"Timed out downloading {url[:200]}", http_status=504) from None
    except httpx.HTTPError as exc:
        raise DownloadFailed(
            f"Download failed for {url[:200]}: {type(exc).__name__}",
            retryable=isinstance(exc, httpx.TransportError),
        ) from None


async def _fetch(
    client: httpx.AsyncClient,
    url: str,
    allowed: tuple[str, ...],
    out: BinaryIO,
    limits: DownloadLimits,
    resolve: Resolver,
    headers: dict[str, str],
) -> None:
    """Follow at most MAX_REDIRECTS redirects, each hop checked and pinned before it connects."""
    for _ in range(MAX_REDIRECTS + 1):
        hop = await next_hop(url, resolve, limits.connect_timeout_s)
        hop.headers.update({k: v for k, v in headers.items() if k.lower() != "host"})
        async with hop.stream(client) as response:
            if response.is_redirect:
                location = response.headers.get("location", "")
                url = checked_url(urljoin(hop.url, location), allowed)
                continue
            if response.status_code != 200:
                raise DownloadFailed(
                    f"Download failed: HTTP {response.status_code} for {url[:200]}",
                    retryable=response.status_code >= 500,
                )
            await _save(response, out, limits)
            return
    raise InvalidInput(f"Too many redirects for {url[:200]}")


async def _save(response: httpx.Response, out: BinaryIO, limits: DownloadLimits) -> None:
    """Copy the body, refusing it as soon as it is known to exceed the size limit."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise PayloadTooLarge(f"Model archive exceeds {limits.max_bytes} bytes")
    received = 0
    async for chunk in response.aiter_bytes():
        received += len(chunk)
        if received > limits.max_bytes:
            raise PayloadTooLarge(f"Model archive exceeds {limits.max_bytes} bytes")
        out.write(chunk)


def local_archive(url: str, store: ModelStore) -> Path:
    """A store-relative name; absolute paths and ``..`` are refused."""
    if url.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", url):
        raise InvalidInput(f"Model archive must be inside the model store: {url[:200]}")
    return store.resolve(url)
