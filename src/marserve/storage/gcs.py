"""gs:// with google-cloud-storage: STORAGE_EMULATOR_HOST, GOOGLE_APPLICATION_CREDENTIALS, else
anonymous (what KServe falls back to, and what its public example bucket relies on)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from marserve.storage.base import Deadline, Progress, RemoteObject, StorageError, StorageSettings
from marserve.storage.uri import Location


def reason(exc: BaseException) -> str:
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.NotFound):
        return "no such bucket or object (HTTP 404)"
    if isinstance(exc, gexc.Forbidden | gexc.Unauthorized):
        return f"access denied (HTTP {exc.code})"
    if isinstance(exc, gexc.GoogleAPICallError):
        return f"GCS error (HTTP {exc.code})"
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
        return "timed out talking to GCS"
    return f"GCS request failed ({type(exc).__name__})"


class GCSRemote:
    """Every object under ``gs://BUCKET/PREFIX/`` (or the one object named PREFIX)."""

    def __init__(self, location: Location, settings: StorageSettings, deadline: Deadline) -> None:
        from google.cloud import storage

        self.location = location
        self.deadline = deadline
        self.read_timeout = min(60.0, settings.timeout_s)
        env = settings.env
        options: dict[str, Any] = {}
        if env.get("STORAGE_EMULATOR_HOST"):
            options["api_endpoint"] = env["STORAGE_EMULATOR_HOST"]
        credentials_file = env.get("GOOGLE_APPLICATION_CREDENTIALS")
        if credentials_file:
            from google.oauth2 import service_account

            credentials = service_account.Credentials.from_service_account_file(
                credentials_file,  # type: ignore[no-untyped-call]
                scopes=["https://www.googleapis.com/auth/devstorage.read_only"],
            )
            self.client = storage.Client(
                project=credentials.project_id, credentials=credentials, client_options=options
            )
        else:
            from google.auth.credentials import AnonymousCredentials

            self.client = storage.Client(
                project="<none>",
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options=options,
            )

    def list(self) -> list[RemoteObject]:
        bucket, prefix = self.location.bucket, self.location.prefix
        listed = f"{prefix}/" if prefix else ""
        try:
            blobs = list(self.client.list_blobs(bucket, prefix=listed, timeout=self.read_timeout))
            found = [
                RemoteObject(b.name[len(listed) :], b.size or 0, str(b.generation), b.name)
                for b in blobs
                if not b.name.endswith("/")
            ]
            if not found and prefix:
                blob = self.client.bucket(bucket).get_blob(prefix, timeout=self.read_timeout)
                if blob is not None:
                    name = prefix.rsplit("/", 1)[-1]
                    found = [RemoteObject(name, blob.size or 0, str(blob.generation), prefix)]
        except Exception as exc:
            raise StorageError(self.location.uri, reason(exc)) from None
        if not found:
            raise StorageError(self.location.uri, "no objects found under the prefix")
        return found

    def fetch(self, obj: RemoteObject, target: Path, progress: Progress) -> None:
        blob = self.client.bucket(self.location.bucket).blob(obj.name)
        try:
            blob.download_to_filename(
                str(target),
                timeout=(min(15.0, self.read_timeout), self.read_timeout),
                if_generation_match=int(obj.version) if obj.version.isdigit() else None,
            )
        except Exception as exc:
            raise StorageError(self.location.uri, f"{obj.name}: {reason(exc)}") from None
        size = target.stat().st_size
        if size != obj.size:
            raise StorageError(self.location.uri, f"{obj.name}: got {size} of {obj.size} bytes")
        progress(size)

    def close(self) -> None:
        self.client.close()
