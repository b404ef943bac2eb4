"""Azure Blob (https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH) with azure-storage-blob:
``AZURE_STORAGE_CONNECTION_STRING``, else the account key KServe passes in
``AZURE_STORAGE_ACCESS_KEY``, else anonymous (a public container)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from marserve.storage.base import Deadline, Progress, RemoteObject, StorageError, StorageSettings
from marserve.storage.uri import Location


def reason(exc: BaseException) -> str:
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, ResourceNotFoundError):
        code = getattr(exc, "error_code", None) or "not found"
        return f"{code} (HTTP 404)"
    if isinstance(exc, ClientAuthenticationError):
        return f"access denied (HTTP {exc.status_code})"
    if isinstance(exc, HttpResponseError):
        return f"{getattr(exc, 'error_code', None) or 'error'} (HTTP {exc.status_code})"
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return f"cannot reach Azure Blob ({type(exc).__name__})"
    return f"Azure Blob request failed ({type(exc).__name__})"


class AzureRemote:
    """Every blob under ``PATH/`` in the container (or the one blob named PATH)."""

    def __init__(self, location: Location, settings: StorageSettings, deadline: Deadline) -> None:
        from azure.storage.blob import BlobServiceClient

        self.location = location
        env = settings.env
        timeouts: dict[str, Any] = {
            "connection_timeout": min(15.0, settings.timeout_s),
            "read_timeout": min(60.0, settings.timeout_s),
            "retry_total": settings.retries,
        }
        connection = env.get("AZURE_STORAGE_CONNECTION_STRING")
        try:
            if connection:
                service = BlobServiceClient.from_connection_string(connection, **timeouts)
            else:
                url = f"https://{location.host}.blob.core.windows.net"
                key = env.get("AZURE_STORAGE_ACCESS_KEY")
                credential = {"account_name": location.host, "account_key": key} if key else None
                service = BlobServiceClient(url, credential=credential, **timeouts)
        except ValueError:
            raise StorageError(location.uri, "the Azure connection string is malformed") from None
        self.container = service.get_container_client(location.bucket)

    def list(self) -> list[RemoteObject]:
        prefix = self.location.prefix
        listed = f"{prefix}/" if prefix else ""
        try:
            if not self.container.exists():
                raise StorageError(self.location.uri, f"no such container {self.location.bucket!r}")
            found = [
                RemoteObject(b.name[len(listed) :], b.size, str(b.etag), b.name)
                for b in self.container.list_blobs(name_starts_with=listed)
                if not b.name.endswith("/")
            ]
            if not found and prefix:
                blob = self.container.get_blob_client(prefix)
                if blob.exists():
                    props = blob.get_blob_properties()
                    name = prefix.rsplit("/", 1)[-1]
                    found = [RemoteObject(name, props.size, str(props.etag), prefix)]
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(self.location.uri, reason(exc)) from None
        if not found:
            raise StorageError(self.location.uri, "no objects found under the prefix")
        return found

    def fetch(self, obj: RemoteObject, target: Path, progress: Progress) -> None:
        from azure.core import MatchConditions

        try:
            stream = self.container.download_blob(
                obj.name, etag=obj.version, match_condition=MatchConditions.IfNotModified
            )
            with open(target, "wb") as out:
                for chunk in stream.chunks():
                    out.write(chunk)
                    progress(len(chunk))
        except Exception as exc:
            raise StorageError(self.location.uri, f"{obj.name}: {reason(exc)}") from None

    def close(self) -> None:
        self.container.close()
