"""Where a model registration may come from: the model store, or an allowed http(s) URL.

Every URL is checked on its parsed, normalised form before any I/O, and again on every redirect:
only http and https, no userinfo, no backslashes or ``..`` segments, and a full match of one of the
``allowed_urls`` regexes (none configured: every remote URL is refused). Downloads are bounded in
size and time and land in the model store under the URL's file name.
"""

from __future__ import annotations

import os
import posixpath
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote, urljoin, urlsplit

from marserve.errors import Conflict, Forbidden, InvalidInput, MarserveError, PayloadTooLarge
from marserve.repository import ARCHIVE_SUFFIXES, ModelStore

if TYPE_CHECKING:
    import httpx

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}")
MAX_REDIRECTS = 5


@dataclass(frozen=True, slots=True)
class DownloadLimits:
    max_bytes: int = 2 << 30  # 2 GiB
    timeout_s: float = 300.0  # the whole download
    connect_timeout_s: float = 10.0


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


def archive_file_name(url: str) -> str:
    name = posixpath.basename(unquote(urlsplit(url).path))
    if not name.endswith(ARCHIVE_SUFFIXES):
        raise InvalidInput(f"URL does not name a model archive (.mar): {url[:200]}")
    check_model_name(name, "archive file name")
    return name


async def download(
    url: str, store: ModelStore, allowed: tuple[str, ...], limits: DownloadLimits
) -> Path:
    """Fetch an allowed URL into the model store; refuses an existing file (409)."""
    import httpx  # only registrations from URLs need it: kept off the server's start-up

    first = checked_url(url, allowed)
    if store.root is None:
        raise InvalidInput("No model store is configured to download into")
    target = store.root / archive_file_name(first)
    if target.exists():
        raise Conflict(f"Model archive {target.name} already exists in the model store")
    timeout = httpx.Timeout(limits.timeout_s, connect=limits.connect_timeout_s)
    fd, partial = tempfile.mkstemp(prefix=".download-", dir=store.root)
    try:
        with os.fdopen(fd, "wb") as out:
            async with httpx.AsyncClient(follow_redirects=False, timeout=timeout) as client:
                await _fetch(client, first, allowed, out, limits)
        os.link(partial, target)  # fails if the name appeared meanwhile: never overwrite
    except FileExistsError:
        raise Conflict(f"Model archive {target.name} already exists in the model store") from None
    except httpx.TimeoutException:
        raise MarserveError(f"Timed out downloading {url[:200]}", http_status=504) from None
    except httpx.HTTPError as exc:
        raise InvalidInput(f"Download failed for {url[:200]}: {type(exc).__name__}") from None
    finally:
        os.unlink(partial)
    return target


async def _fetch(
    client: httpx.AsyncClient,
    url: str,
    allowed: tuple[str, ...],
    out: BinaryIO,
    limits: DownloadLimits,
) -> None:
    for _ in range(MAX_REDIRECTS + 1):
        async with client.stream("GET", url) as response:
            if response.is_redirect:
                location = response.headers.get("location", "")
                url = checked_url(urljoin(url, location), allowed)
                continue
            if response.status_code != 200:
                raise InvalidInput(f"Download failed: HTTP {response.status_code} for {url[:200]}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limits.max_bytes:
                raise PayloadTooLarge(f"Model archive exceeds {limits.max_bytes} bytes")
            received = 0
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                if received > limits.max_bytes:
                    raise PayloadTooLarge(f"Model archive exceeds {limits.max_bytes} bytes")
                out.write(chunk)
            return
    raise InvalidInput(f"Too many redirects for {url[:200]}")


def local_archive(url: str, store: ModelStore) -> Path:
    """A store-relative name; absolute paths and ``..`` are refused."""
    if url.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", url):
        raise InvalidInput(f"Model archive must be inside the model store: {url[:200]}")
    return store.resolve(url)
