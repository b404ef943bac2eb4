"""http(s):// for one object, through marserve.sources' checked download, retried with backoff."""

from __future__ import annotations

import asyncio
import json
import posixpath
import ssl
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from marserve.errors import MarserveError
from marserve.sources import DownloadFailed, DownloadLimits, checked_url, fetch_url
from marserve.storage.base import Deadline, Progress, RemoteObject, StorageError, StorageSettings
from marserve.storage.uri import Location

ANY_URL = (r"https?://.*",)  # the operator wrote the storageUri: every address check still holds


def headers_for(host: str, env: dict[str, str] | object) -> dict[str, str]:
    """KServe's per-host headers: a JSON object in the env variable ``<host>-headers``."""
    raw = env.get(f"{host}-headers", "") if isinstance(env, dict) else ""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise ValueError(f"{host}-headers is not a JSON object") from None
    if not isinstance(value, dict):
        raise ValueError(f"{host}-headers is not a JSON object")
    return {str(k): str(v) for k, v in value.items()}


class HTTPRemote:
    """One object: saved under its file name (the pull unpacks an archive)."""

    def __init__(self, location: Location, settings: StorageSettings, deadline: Deadline) -> None:
        self.location = location
        self.settings = settings
        self.deadline = deadline
        env = dict(settings.env)
        try:
            self.url = checked_url(location.uri, ANY_URL)
            self.headers = headers_for(location.host, env)
        except (MarserveError, ValueError) as exc:
            raise StorageError(location.uri, str(exc)) from None
        bundle = env.get("REQUESTS_CA_BUNDLE") or env.get("SSL_CERT_FILE")
        self.verify: ssl.SSLContext | bool = True
        if bundle:
            try:
                self.verify = ssl.create_default_context(cafile=bundle)
            except (OSError, ssl.SSLError):
                raise StorageError(location.uri, "the CA bundle cannot be read") from None

    def list(self) -> list[RemoteObject]:
        name = posixpath.basename(unquote(urlsplit(self.url).path))
        if not name:
            raise StorageError(self.location.uri, "the URL names no file")
        return [RemoteObject(name, -1, "", self.url)]

    def fetch(self, obj: RemoteObject, target: Path, progress: Progress) -> None:
        delay = 0.5
        for attempt in range(self.settings.retries + 1):
            try:
                self._once(target)
                break
            except DownloadFailed as exc:
                last = attempt == self.settings.retries or delay > self.deadline.left()
                if not exc.retryable or last:
                    raise StorageError(self.location.uri, exc.message) from None
            except MarserveError as exc:
                raise StorageError(self.location.uri, exc.message) from None
            time.sleep(delay)
            delay *= 2
        progress(target.stat().st_size)

    def _once(self, target: Path) -> None:
        left = max(self.deadline.left(), 0.001)
        limits = DownloadLimits(
            max_bytes=self.settings.max_bytes, timeout_s=left, connect_timeout_s=min(10.0, left)
        )
        with open(target, "wb") as out:
            asyncio.run(
                fetch_url(self.url, out, ANY_URL, limits, headers=self.headers, verify=self.verify)
            )

    def close(self) -> None:
        """Each fetch opens and closes its own client: nothing is held."""
