"""storageUri pulls against real local stores: the cache, and each fault with its own message,
no partial folder left behind and the cache still usable afterwards."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from marserve.storage import StorageError, StorageSettings, pull
from tests.e2e.storage_servers import azurite, moto_s3, tls_server

pytestmark = pytest.mark.slow
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[Any, dict[str, str]]]:
    import boto3

    with moto_s3() as endpoint:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket="models")
        client.put_object(Bucket="models", Key="good/config/config.properties", Body=b"a=1\n")
        client.put_object(Bucket="models", Key="good/model-store/m.mar", Body=b"x" * 5000)
        yield client, {"AWS_ENDPOINT_URL": endpoint, **KEYS}


def settings(tmp: Path, env: dict[str, str], **extra: Any) -> StorageSettings:
    return StorageSettings(cache_dir=tmp / "cache", env=env, **extra)


def assert_clean(tmp: Path, dest: Path) -> None:
    """No destination and no partial folder, anywhere."""
    assert not dest.exists()
    leftovers = [p.name for p in tmp.rglob("*") if ".partial-" in p.name or ".old-" in p.name]
    assert leftovers == []


def test_second_pull_downloads_nothing_and_a_change_is_fetched(
    tmp_path: Path, s3: tuple[Any, dict[str, str]]
) -> None:
    client, env = s3
    client.put_object(Bucket="models", Key="cache/model-store/m.mar", Body=b"one")
    first = pull("s3://models/cache", tmp_path / "r1", settings(tmp_path, env))
    assert (first.cached, first.bytes_downloaded) == (False, 3)
    again = pull("s3://models/cache", tmp_path / "r2", settings(tmp_path, env))
    assert (again.cached, again.bytes_downloaded) == (True, 0)
    assert (again.path / "model-store" / "m.mar").read_bytes() == b"one"
    client.put_object(Bucket="models", Key="cache/model-store/m.mar", Body=b"second")
    changed = pull("s3://models/cache", tmp_path / "r3", settings(tmp_path, env))
    assert (changed.cached, changed.bytes_downloaded) == (False, 6)
    assert (changed.path / "model-store" / "m.mar").read_bytes() == b"second"


@pytest.mark.parametrize(
    ("uri", "extra", "message"),
    [
        ("s3://no-such-bucket/good", {}, "no such bucket 'no-such-bucket'"),
        ("s3://models/no/such/key", {}, "no such key"),
        ("s3://models/good", {"max_bytes": 1000}, "larger than the 1000-byte limit"),
        ("s3://models/dotdot", {}, "would land outside the destination"),
    ],
)
def test_s3_faults(
    tmp_path: Path, s3: tuple[Any, dict[str, str]], uri: str, extra: dict[str, Any], message: str
) -> None:
    client, env = s3
    client.put_object(Bucket="models", Key="dotdot/a/../../../evil", Body=b"x")
    dest = tmp_path / "dest"
    with pytest.raises(StorageError) as failure:
        pull(uri, dest, settings(tmp_path, env, **extra))
    text = str(failure.value)
    assert text.startswith(f"Cannot pull {uri}: ") and message in text, text
    assert "\n" not in text and "testing" not in text
    assert_clean(tmp_path, dest)
    assert not (tmp_path / "evil").exists()
    good = pull("s3://models/good", dest, settings(tmp_path, env))  # the cache still works
    assert (good.path / "model-store" / "m.mar").stat().st_size == 5000


def test_wrong_azure_key_is_refused_without_showing_it(tmp_path: Path) -> None:
    from azure.storage.blob import BlobServiceClient

    with azurite(tmp_path) as connection:
        BlobServiceClient.from_connection_string(connection).create_container("models")
        wrong = connection.replace("AccountKey=", "AccountKey=AAAA")
        dest = tmp_path / "dest"
        env = {"AZURE_STORAGE_CONNECTION_STRING": wrong}
        uri = "https://devstoreaccount1.blob.core.windows.net/models/mnist"
        with pytest.raises(StorageError) as failure:
            pull(uri, dest, settings(tmp_path, env, retries=0))
        text = str(failure.value)
        assert "HTTP 403" in text and "AAAA" not in text, text
        assert_clean(tmp_path, dest)


def test_a_server_that_stalls_mid_body_times_out(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "model.tar").write_bytes(b"\0" * 100_000)
    with tls_server(www, tmp_path, stall_after=1000) as (base, bundle):
        env = {"REQUESTS_CA_BUNDLE": str(bundle)}
        dest = tmp_path / "dest"
        with pytest.raises(StorageError) as failure:
            pull(f"{base}/model.tar", dest, settings(tmp_path, env, timeout_s=1.5))
        assert "Timed out downloading" in str(failure.value)
        assert_clean(tmp_path, dest)


def test_unknown_schemes_name_what_is_supported(tmp_path: Path) -> None:
    for uri in ("hdfs://nn/models", "oci://registry/model:1", "hf://owner/model"):
        with pytest.raises(StorageError) as failure:
            pull(uri, tmp_path / "dest", settings(tmp_path, {}))
        scheme = uri.split(":", 1)[0]
        assert f"storage scheme {scheme}:// is not supported (use gs://" in str(failure.value)


def test_http_5xx_is_retried_with_backoff_and_4xx_is_not(tmp_path: Path) -> None:
    import http.server
    import threading

    calls: list[str] = []

    class Flaky(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            calls.append(self.path)
            if self.path == "/missing.tar" or len(calls) < 3:
                self.send_error(404 if self.path == "/missing.tar" else 503)
                return
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = pull(f"{base}/weights.bin", tmp_path / "d1", settings(tmp_path, {}))
        assert (result.path / "weights.bin").read_bytes() == b"hello"
        assert calls == ["/weights.bin"] * 3
        with pytest.raises(StorageError, match="HTTP 404"):
            pull(f"{base}/missing.tar", tmp_path / "d2", settings(tmp_path, {}))
        assert calls.count("/missing.tar") == 1
        assert_clean(tmp_path, tmp_path / "d2")
    finally:
        server.shutdown()
        server.server_close()


# s3transfer abandons the aborted GET's pooled connection, which only the garbage collector
# closes (an unraisable ResourceWarning): collected here, so it is this test's, not a later one's.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_pull_time_limit_stops_a_download_in_progress(
    tmp_path: Path, s3: tuple[Any, dict[str, str]]
) -> None:
    client, env = s3
    client.put_object(Bucket="models", Key="slow/model-store/big.mar", Body=b"z" * (16 << 20))
    ticks = iter(range(10_000))  # a clock that moves 1 s every time it is read

    def clock() -> float:
        return float(next(ticks))

    dest = tmp_path / "dest"
    with pytest.raises(StorageError, match="timed out"):
        pull("s3://models/slow", dest, settings(tmp_path, env, timeout_s=3), clock=clock)
    assert_clean(tmp_path, dest)
    gc.collect()
