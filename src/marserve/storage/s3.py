"""s3:// with boto3, configured from KServe's environment variables."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from marserve.storage.base import Deadline, Progress, RemoteObject, StorageError, StorageSettings
from marserve.storage.uri import Location

FALSE = ("0", "false", "no", "off")


def endpoint_url(env: Mapping[str, str]) -> str | None:
    """``AWS_ENDPOINT_URL``, else KServe's ``S3_ENDPOINT`` (host[:port]) with ``S3_USE_HTTPS``."""
    if env.get("AWS_ENDPOINT_URL"):
        return env["AWS_ENDPOINT_URL"]
    endpoint = env.get("S3_ENDPOINT", "")
    if not endpoint:
        return None
    if "://" in endpoint:
        return endpoint
    scheme = "http" if env.get("S3_USE_HTTPS", "1").lower() in FALSE else "https"
    return f"{scheme}://{endpoint}"


def verify(env: Mapping[str, str]) -> bool | str:
    if env.get("S3_VERIFY_SSL", "1").lower() in FALSE:
        return False
    return env.get("AWS_CA_BUNDLE") or True


def client_kwargs(env: Mapping[str, str], settings: StorageSettings) -> dict[str, Any]:
    """boto3.client("s3", **kwargs) as KServe configures it; pure, for table tests."""
    from botocore import UNSIGNED
    from botocore.config import Config

    anonymous = env.get("awsAnonymousCredential", "").lower() == "true"
    virtual = env.get("S3_USER_VIRTUAL_BUCKET", "").lower() == "true"
    config = Config(
        connect_timeout=min(15.0, settings.timeout_s),
        read_timeout=min(30.0, settings.timeout_s),
        retries={"max_attempts": settings.retries + 1, "mode": "standard"},
        s3={"addressing_style": "virtual" if virtual else "path"},
        signature_version=UNSIGNED if anonymous else None,
    )
    kwargs: dict[str, Any] = {
        "config": config,
        "endpoint_url": endpoint_url(env),
        "verify": verify(env),
        "region_name": env.get("AWS_DEFAULT_REGION") or "us-east-1",
    }
    if not anonymous and env.get("AWS_ACCESS_KEY_ID"):
        kwargs["aws_access_key_id"] = env["AWS_ACCESS_KEY_ID"]
        kwargs["aws_secret_access_key"] = env.get("AWS_SECRET_ACCESS_KEY", "")
    return kwargs


def reason(exc: BaseException) -> str:
    """One line for a botocore error: the S3 error code and HTTP status, nothing else."""
    from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "")).strip()
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        known = {
            "NoSuchBucket": "no such bucket",
            "404": "no such bucket or key",
            "NoSuchKey": "no such key",
            "AccessDenied": "access denied",
            "403": "access denied",
            "InvalidAccessKeyId": "access denied (unknown access key)",
            "SignatureDoesNotMatch": "access denied (wrong secret key)",
        }
        return f"{known.get(code, code or 'error')} (HTTP {status})"
    if isinstance(exc, (ReadTimeoutError, ConnectTimeoutError)):
        return "timed out talking to S3"
    return f"S3 request failed ({type(exc).__name__})"


class S3Remote:
    """Every object under ``s3://BUCKET/PREFIX/`` (or the one object named PREFIX)."""

    def __init__(self, location: Location, settings: StorageSettings, deadline: Deadline) -> None:
        import boto3

        self.location = location
        self.client = boto3.session.Session().client("s3", **client_kwargs(settings.env, settings))

    def _fail(self, exc: BaseException) -> StorageError:
        return StorageError(self.location.uri, reason(exc))

    def list(self) -> list[RemoteObject]:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, prefix = self.location.bucket, self.location.prefix
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if _is_404(exc):
                raise StorageError(self.location.uri, f"no such bucket {bucket!r}") from None
            raise self._fail(exc) from None
        except BotoCoreError as exc:
            raise self._fail(exc) from None
        try:
            found = self._list(bucket, f"{prefix}/" if prefix else "")
            if not found and prefix:
                head = self.client.head_object(Bucket=bucket, Key=prefix)
                name = prefix.rsplit("/", 1)[-1]
                found = [RemoteObject(name, head["ContentLength"], head["ETag"], prefix)]
        except (BotoCoreError, ClientError) as exc:
            if isinstance(exc, ClientError) and self.location.prefix and _is_404(exc):
                raise StorageError(self.location.uri, "no such key (HTTP 404)") from None
            raise self._fail(exc) from None
        if not found:
            raise StorageError(self.location.uri, "no objects found under the prefix")
        return found

    def _list(self, bucket: str, prefix: str) -> builtins.list[RemoteObject]:
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/"):
                    continue  # a folder marker
                version = f"{item['ETag']}@{item['LastModified'].isoformat()}"
                found.append(RemoteObject(key[len(prefix) :], item["Size"], version, key))
        return found

    def fetch(self, obj: RemoteObject, target: Path, progress: Progress) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.download_file(
                self.location.bucket, obj.name, str(target), Callback=progress
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc) from None
        size = target.stat().st_size
        if size != obj.size:
            raise StorageError(self.location.uri, f"{obj.name}: got {size} of {obj.size} bytes")

    def close(self) -> None:
        self.client.close()


def _is_404(exc: Any) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey")
