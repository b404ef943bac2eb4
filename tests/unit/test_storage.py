"""The storage package's pure parts: URI dispatch, KServe's S3 knobs, cache keys, local paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from marserve.storage import RemoteObject, StorageError, StorageSettings, parse, pull
from marserve.storage.cache import cache_key
from marserve.storage.http import headers_for
from marserve.storage.s3 import client_kwargs, endpoint_url


@pytest.mark.parametrize(
    ("uri", "kind", "bucket", "prefix", "host"),
    [
        ("gs://kfserving-examples/models/torchserve/v1", "gs", "kfserving-examples",
         "models/torchserve/v1", ""),
        ("s3://bucket/prefix/", "s3", "bucket", "prefix", ""),
        ("s3://bucket", "s3", "bucket", "", ""),
        ("pvc://model-pv-claim", "pvc", "model-pv-claim", "", ""),
        ("pvc://claim/sub/dir", "pvc", "claim", "sub/dir", ""),
        ("https://acct1.blob.core.windows.net/models/mnist", "azure", "models", "mnist", "acct1"),
        ("https://example.com/models/m.tar.gz", "http", "", "", "example.com"),
        ("http://127.0.0.1:8000/m.zip", "http", "", "", "127.0.0.1"),
        ("file:///srv/models", "local", "", "", ""),
        ("/srv/models", "local", "", "", ""),
    ],
)  # fmt: skip
def test_parse_dispatches_like_kserve(
    uri: str, kind: str, bucket: str, prefix: str, host: str
) -> None:
    location = parse(uri)
    assert (location.kind, location.bucket, location.prefix, location.host) == (
        kind, bucket, prefix, host,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("hdfs://nn/models", "storage scheme hdfs:// is not supported"),
        ("oci://registry/m:1", "storage scheme oci:// is not supported"),
        ("s3://", "names no bucket"),
        ("pvc:///x", "names no claim"),
        ("gs://b/a/../../etc", "contains '..'"),
        ("s3://b/a\\b", "backslash"),
        ("https://acct1.blob.core.windows.net/", "names no container"),
        ("", "empty"),
    ],
)
def test_parse_refuses(uri: str, reason: str) -> None:
    with pytest.raises(StorageError) as failure:
        parse(uri)
    assert reason in str(failure.value)


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, None),
        ({"AWS_ENDPOINT_URL": "http://minio:9000"}, "http://minio:9000"),
        ({"S3_ENDPOINT": "minio:9000"}, "https://minio:9000"),
        ({"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "0"}, "http://minio:9000"),
        ({"S3_ENDPOINT": "http://m:1", "AWS_ENDPOINT_URL": "https://a:2"}, "https://a:2"),
    ],
)
def test_s3_endpoint_from_kserve_env(env: dict[str, str], url: str | None) -> None:
    assert endpoint_url(env) == url


def test_s3_client_knobs() -> None:
    from botocore import UNSIGNED

    settings = StorageSettings(timeout_s=5)
    env = {"S3_VERIFY_SSL": "0", "AWS_DEFAULT_REGION": "eu-west-1",
           "S3_USER_VIRTUAL_BUCKET": "true", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "s"}  # fmt: skip
    kwargs = client_kwargs(env, settings)
    assert kwargs["verify"] is False and kwargs["region_name"] == "eu-west-1"
    assert kwargs["config"].s3 == {"addressing_style": "virtual"}
    assert kwargs["config"].read_timeout == 5
    assert kwargs["aws_access_key_id"] == "k"
    anonymous = client_kwargs({**env, "awsAnonymousCredential": "true"}, settings)
    assert anonymous["config"].signature_version is UNSIGNED
    assert "aws_access_key_id" not in anonymous
    assert client_kwargs({"AWS_CA_BUNDLE": "/ca.pem"}, settings)["verify"] == "/ca.pem"
    assert client_kwargs({}, settings)["config"].s3 == {"addressing_style": "path"}


def test_cache_key_follows_versions() -> None:
    one = [RemoteObject("a", 1, "e1", "p/a"), RemoteObject("b", 2, "e2", "p/b")]
    assert cache_key("s3://b/p", one) == cache_key("s3://b/p/", list(reversed(one)))
    assert cache_key("s3://b/p", one) != cache_key("s3://b/q", one)
    changed = [one[0], RemoteObject("b", 2, "e3", "p/b")]
    assert cache_key("s3://b/p", one) != cache_key("s3://b/p", changed)
    assert cache_key("https://h/m.tar", [RemoteObject("m.tar", -1, "", "u")]) is None


def test_headers_for_host() -> None:
    env = {"example.com-headers": '{"Authorization": "Bearer t"}'}
    assert headers_for("example.com", env) == {"Authorization": "Bearer t"}
    assert headers_for("other.com", env) == {}
    with pytest.raises(ValueError, match="not a JSON object"):
        headers_for("example.com", {"example.com-headers": "[1]"})


def test_pvc_maps_to_its_folder_in_place(tmp_path: Path) -> None:
    (tmp_path / "claim" / "v1" / "model-store").mkdir(parents=True)
    settings = StorageSettings(pvc={"claim": tmp_path / "claim"}, cache_dir=tmp_path / "c")
    result = pull("pvc://claim/v1", tmp_path / "dest", settings)
    assert result.path == (tmp_path / "claim" / "v1").resolve() and result.cached
    assert not (tmp_path / "dest").exists()
    with pytest.raises(StorageError, match="no folder is mapped to claim 'other'"):
        pull("pvc://other/v1", tmp_path / "dest", settings)
    (tmp_path / "outside").mkdir()
    (tmp_path / "claim" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(StorageError, match="leaves the claim's folder"):
        pull("pvc://claim/link", tmp_path / "dest", settings)


def test_a_local_path_that_is_missing_says_so(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no model found"):
        pull(str(tmp_path / "nothing"), tmp_path / "dest", StorageSettings(cache_dir=tmp_path))


def test_a_non_empty_destination_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "mine.txt").write_text("keep")
    with pytest.raises(StorageError, match="not empty and holds no earlier pull"):
        pull("s3://b/p", tmp_path / "dest", StorageSettings(cache_dir=tmp_path / "c"))
    assert (tmp_path / "dest" / "mine.txt").read_text() == "keep"
