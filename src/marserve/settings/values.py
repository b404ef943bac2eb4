"""Typed values of configuration keys: listen addresses and the converters that check raw values."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from marserve.errors import ConfigError

_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_SHOWN = 120


def shown(value: object) -> str:
    """The value as an error message shows it: ``repr`` cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 4] + "...'"


def bad(key: str, value: object, expected: str) -> ConfigError:
    """The one error shape: ``key='value': expected <what>``."""
    return ConfigError(f"{key}={shown(value)}: expected {expected}")


@dataclass(frozen=True, slots=True)
class Address:
    """Where a listener binds: ``http(s)://host:port`` or ``unix:/path`` (then host is empty)."""

    scheme: str  # "http", "https" or "unix"
    host: str  # IP address or host name, without IPv6 brackets; "" for unix sockets
    port: int  # 0..65535; 0 asks the OS for a free port; 0 for unix sockets
    path: str | None = None  # the socket path for ``unix:`` addresses

    @classmethod
    def parse(cls, value: str, key: str) -> Address:
        """Parse ``http://host[:port]``, ``https://host[:port]`` or ``unix:/path``.

        A missing port is the scheme's own (80, 443), as in TorchServe.
        """
        text = value.strip()
        expected = "http://host:port, https://host:port or unix:/path"
        if text.lower().startswith("unix:"):
            path = text[len("unix:") :]
            if path.startswith("//"):
                path = path[2:]
            if not path.startswith("/") or "\x00" in path:
                raise bad(key, value, "unix:/absolute/path")
            return cls("unix", "", 0, path)
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            raise bad(key, value, expected) from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or parts.username or parts.password:
            raise bad(key, value, expected)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise bad(key, value, expected)
        host = parts.hostname or ""
        if not valid_host(host):
            raise bad(key, value, expected)
        return cls(scheme, host, _DEFAULT_PORTS[scheme] if port is None else port)

    @property
    def url(self) -> str:
        """The address written back as a URL (``unix:/path`` for sockets)."""
        if self.scheme == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        """True for unix sockets and loopback hosts (127.0.0.0/8, ::1, localhost)."""
        if self.scheme == "unix" or self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def valid_host(host: str) -> bool:
    """True for an IPv4/IPv6 address or a syntactically valid DNS name."""
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return len(host) <= 253 and _HOSTNAME.fullmatch(host) is not None
    return True


def to_text(value: object, key: str) -> str:
    """A string value with surrounding whitespace removed."""
    if not isinstance(value, str):
        raise bad(key, value, "a string")
    return value.strip()


def to_optional_text(value: object, key: str) -> str | None:
    """A string, or ``None`` when empty."""
    return to_text(value, key) or None


def to_bool(value: object, key: str) -> bool:
    """``true``/``false`` in any case (or a Python bool from the command line)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise bad(key, value, "true or false")


def to_int(value: object, key: str, minimum: int, maximum: int | None = None) -> int:
    """An integer in ``[minimum, maximum]``; accepts ints and decimal strings, never bools."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,18}", value.strip()):
        number = int(value.strip())
    if number is None or number < minimum or (maximum is not None and number > maximum):
        raise bad(key, value, _int_expectation(minimum, maximum))
    return number


def _int_expectation(minimum: int, maximum: int | None) -> str:
    if maximum is not None:
        return f"an integer from {minimum} to {maximum}"
    if minimum == 1:
        return "a positive integer"
    if minimum == 0:
        return "a non-negative integer"
    return f"an integer >= {minimum}"


def to_positive_int(value: object, key: str) -> int:
    return to_int(value, key, 1)


_DECIMAL = re.compile(r"[+]?([0-9]{1,12}(\.[0-9]{0,12})?|\.[0-9]{1,12})")


def to_positive_number(value: object, key: str) -> float:
    """A number above 0 (``0.25``, ``5``), as TorchServe's Double-valued keys take."""
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        number = float(value.strip())
    if number is None or not 0 < number < 1e12:
        raise bad(key, value, "a positive number")
    return number


def to_non_negative_int(value: object, key: str) -> int:
    return to_int(value, key, 0)


def to_port(value: object, key: str) -> int:
    return to_int(value, key, 0, 65535)


def to_optional_non_negative_int(value: object, key: str) -> int | None:
    if isinstance(value, str) and not value.strip():
        return None
    return to_non_negative_int(value, key)


def to_path(value: object, key: str) -> Path | None:
    """A filesystem path (``~`` expanded), or ``None`` when empty."""
    if isinstance(value, Path):
        return value.expanduser()
    text = to_text(value, key)
    if "\x00" in text:
        raise bad(key, value, "a filesystem path")
    return Path(text).expanduser() if text else None


def to_address(value: object, key: str) -> Address:
    if isinstance(value, Address):
        return value
    if not isinstance(value, str):
        raise bad(key, value, "http://host:port, https://host:port or unix:/path")
    return Address.parse(value, key)


def to_host(value: object, key: str) -> str:
    """A bare host for gRPC listeners: IP address (``[::1]`` allowed) or host name."""
    text = to_text(value, key)
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if not valid_host(host):
        raise bad(key, value, "an IP address or host name")
    return host


def to_list(value: object, key: str) -> tuple[str, ...]:
    """Comma separated items (or a sequence from the command line), stripped, empties dropped."""
    if isinstance(value, str):
        items: Sequence[object] = value.split(",")
    elif isinstance(value, Sequence):
        items = value
    else:
        raise bad(key, value, "a comma separated list")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise bad(key, value, "a comma separated list of strings")
        out.extend(part.strip() for part in item.split(",") if part.strip())
    return tuple(out)


def to_regex_list(value: object, key: str) -> tuple[str, ...]:
    """Comma separated regular expressions; each must compile."""
    patterns = to_list(value, key)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise bad(key, pattern, f"a valid regular expression ({exc})") from None
    return patterns


def to_optional_regex(value: object, key: str) -> str | None:
    """One regular expression, or ``None`` when empty."""
    text = to_text(value, key)
    if not text:
        return None
    try:
        re.compile(text)
    except re.error as exc:
        raise bad(key, value, f"a valid regular expression ({exc})") from None
    return text


def to_choice(value: object, key: str, choices: Sequence[str]) -> str:
    """One of ``choices``, compared case-insensitively, returned in lower case."""
    text = to_text(value, key).lower()
    if text not in choices:
        raise bad(key, value, "one of " + ", ".join(choices))
    return text
