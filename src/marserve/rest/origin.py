"""Requests a browser was tricked into sending: DNS rebinding and cross-site requests.

A web page on another site can make its visitor's browser send requests to a marserve listening
on 127.0.0.1, which trusts its own machine (the shape of Ray's CVE-2025-62593). Token auth stops
such a request when it is on (the page cannot add an ``Authorization`` header without CORS), but
local development often runs with it off. :class:`BrowserGuard` refuses three shapes with 403,
before any route runs:

- **DNS rebinding (Host).** A management or metrics request (anything but the data plane) that
  arrived on a loopback listener must name a loopback host in ``Host``: ``localhost``,
  ``*.localhost``, ``127.0.0.0/8`` or ``[::1]``, or one of the ``allowed_hosts`` setting (``*``
  turns the check off). A rebinding page reaches the listener under its own name
  (``Host: evil.example``). Data-plane paths (``/predictions``, ``/explanations``, ``/ping``,
  KServe ``/v1`` and ``/v2`` but for the repository extension) answer any ``Host``: KServe clients
  name the InferenceService there (``Host: mnist.default.example.com``), as the seeds' curl
  commands do. Listeners on other addresses (``0.0.0.0`` in a cluster, behind an ingress) are
  not checked at all.
- **Cross-site requests (Origin).** A request that changes state (``POST``, ``PUT``, ``PATCH``,
  ``DELETE``) and carries an ``Origin`` other than the listener's own (``null`` included) is
  refused, unless ``cors_allowed_origin`` names that origin or is ``*``.
- **Form bodies to management.** A state-changing management request (``/models``,
  ``/v2/repository``, ``/token``) with a content type an HTML form sends cross-site without a CORS
  preflight (``text/plain``, ``application/x-www-form-urlencoded``, ``multipart/form-data``) is
  refused: the management API takes query parameters or JSON.

Errors are rendered like every other error (:func:`marserve.rest.errors.error_response`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from marserve.errors import Forbidden
from marserve.rest.errors import ERROR_KEY, error_response

__all__ = ["BrowserGuard", "BrowserPolicy", "is_loopback_host"]

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MANAGEMENT_PREFIXES = ("/models", "/v2/repository", "/token")
DATA_PLANE_PREFIXES = ("/predictions/", "/explanations/", "/ping", "/v1/", "/v2")
FORM_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _bare_host(host: str) -> str:
    """``Host``-style ``name[:port]`` or ``[v6]:port`` -> the lower-case name or address."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, _, port = host.rpartition(":")
    if name and port.isdigit() and ":" not in name:
        host = name
    return host.rstrip(".")


def is_loopback_host(host: str) -> bool:
    """Whether a bare host names this machine's loopback: localhost names or addresses."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an ``Origin`` value or of ``scheme://Host``; None if malformed."""
    parts = urlsplit(url.strip().lower())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        return None
    return parts.scheme, parts.hostname.rstrip("."), port


@dataclass(frozen=True, slots=True)
class BrowserPolicy:
    """What the guard accepts beyond the listener's own names (from the server settings)."""

    allowed_hosts: frozenset[str] = frozenset()  # extra Host names for loopback listeners
    allowed_origin: str | None = None  # cors_allowed_origin: one origin, or "*"

    @classmethod
    def of(cls, allowed_hosts: Iterable[str], allowed_origin: str | None) -> BrowserPolicy:
        hosts = frozenset(_bare_host(host) for host in allowed_hosts if host.strip())
        origin = allowed_origin.strip().rstrip("/").lower() if allowed_origin else None
        return cls(hosts, origin or None)

    def check(
        self,
        *,
        listener_host: str | None,
        scheme: str,
        method: str,
        path: str,
        headers: dict[str, str],
    ) -> None:
        """Raise :class:`Forbidden` for a request shaped like a browser attack."""
        host_header = headers.get("host", "")
        management = path.startswith(MANAGEMENT_PREFIXES)
        data_plane = path.startswith(DATA_PLANE_PREFIXES) and not management
        if not data_plane and listener_host and is_loopback_host(_bare_host(listener_host)):
            self._check_host(host_header)
        if method not in STATE_CHANGING:
            return
        origin = headers.get("origin")
        if origin is not None:
            self._check_origin(origin, scheme, host_header)
        if management:
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media in FORM_TYPES:
                raise Forbidden(
                    f"Management requests that change state cannot carry a {media} body "
                    "(cross-site request protection): send query parameters or JSON"
                )

    def _check_host(self, host_header: str) -> None:
        host = _bare_host(host_header)
        if not host or is_loopback_host(host) or "*" in self.allowed_hosts:
            return
        if host not in self.allowed_hosts:
            raise Forbidden(
                f"Host {host_header[:100]!r} is not a name of this loopback listener "
                "(DNS rebinding protection); list it in allowed_hosts to accept it"
            )

    def _check_origin(self, origin: str, scheme: str, host_header: str) -> None:
        wanted = origin.strip().rstrip("/").lower()
        if self.allowed_origin in ("*", wanted):
            return
        parsed = _origin(wanted)
        if parsed is not None and parsed == _origin(f"{scheme}://{host_header}"):
            return  # same origin: the server's own page, or a client that sets Origin itself
        raise Forbidden(
            f"Cross-site request from origin {origin[:100]!r} refused; "
            "set cors_allowed_origin to allow it"
        )


class BrowserGuard:
    """ASGI middleware applying a :class:`BrowserPolicy` to every HTTP request of one app."""

    def __init__(self, app: ASGIApp, policy: BrowserPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {
                key.decode("latin-1"): value.decode("latin-1")
                for key, value in scope.get("headers", ())
                if key in (b"host", b"origin", b"content-type")
            }
            server = scope.get("server")
            try:
                self.policy.check(
                    listener_host=server[0] if server else None,
                    scheme=scope.get("scheme", "http"),
                    method=scope["method"],
                    path=scope["path"],
                    headers=headers,
                )
            except Forbidden as exc:
                scope[ERROR_KEY] = exc
                response = error_response(scope["path"], exc.http_status, exc.message)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
