"""storageUri parsing: which scheme a URI names, in KServe's dispatch order (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from marserve.storage.base import StorageError

SUPPORTED = (
    "gs://, s3://, https://ACCOUNT.blob.core.windows.net/, http(s)://, pvc://, file:// or a path"
)
AZURE_HOST = re.compile(r"(?P<account>[a-z0-9]{3,24})\.blob\.core\.windows\.net", re.IGNORECASE)
SCHEME = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")


@dataclass(frozen=True, slots=True)
class Location:
    """A parsed storageUri: ``kind`` is one of local, pvc, gs, s3, azure, http; ``bucket`` is the
    bucket, container or claim (and the account for Azure in ``host``); ``prefix`` has no
    leading or trailing slash."""

    kind: str
    uri: str
    bucket: str = ""
    prefix: str = ""
    host: str = ""
    path: Path | None = None


def parse(uri: str) -> Location:
    """The Location a storageUri names; StorageError for an unknown scheme or a malformed URI."""
    if not uri or any(ord(c) < 0x20 for c in uri):
        raise StorageError(uri, "empty or contains control characters")
    match = SCHEME.match(uri)
    if match is None:
        return Location("local", uri, path=Path(uri).expanduser())
    scheme = match["scheme"].lower()
    if scheme == "file":
        return Location("local", uri, path=Path(unquote(urlsplit(uri).path)))
    if scheme in ("gs", "s3", "pvc"):
        return _bucket_uri(scheme, uri)
    if scheme in ("http", "https"):
        parts = urlsplit(uri)
        azure = AZURE_HOST.fullmatch(parts.hostname or "")
        if azure is not None and scheme == "https":
            container, _, prefix = parts.path.lstrip("/").partition("/")
            if not container:
                raise StorageError(uri, "an Azure Blob URI names no container")
            return Location("azure", uri, container, prefix.strip("/"), azure["account"])
        if not parts.hostname:
            raise StorageError(uri, "the URL names no host")
        return Location("http", uri, host=parts.hostname)
    raise StorageError(uri, f"storage scheme {scheme}:// is not supported (use {SUPPORTED})")


def _bucket_uri(scheme: str, uri: str) -> Location:
    rest = uri[len(scheme) + 3 :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        what = "claim" if scheme == "pvc" else "bucket"
        raise StorageError(uri, f"the URI names no {what}")
    if "\\" in rest or ".." in prefix.split("/"):
        raise StorageError(uri, "the path contains '..' or a backslash")
    return Location(scheme, uri, bucket, prefix.strip("/"))
