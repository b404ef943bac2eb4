"""``marserve serve --storage-uri`` for every scheme, each against a real local store: the
MNIST model store is uploaded, pulled, served, and answers the seeds' v1 request."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import READY_DEADLINE_S, RunningServer, snapshot, write_config
from tests.e2e.storage_servers import azurite, gcs_emulator, moto_s3, tls_server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
V1_SAMPLE = ROOT / "examples" / "mnist" / "requests" / "v1" / "mnist.json"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, mnist_store: Path) -> Path:
    """The seeds' layout: config/config.properties (ports 0) + model-store/mnist.mar."""
    root = tmp_path_factory.mktemp("storage-src") / "store"
    (root / "config").mkdir(parents=True)
    (root / "model-store").mkdir()
    (root / "model-store" / "mnist.mar").write_bytes(
        (mnist_store / "model-store" / "mnist.mar").read_bytes()
    )
    write_config(
        root / "config" / "config.properties",
        model_snapshot=snapshot({"name": "mnist", "marName": "mnist.mar"}),
    )
    return root


def files(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path.relative_to(root).as_posix(), path


def serve_uri(tmp: Path, uri: str, env: dict[str, str], *extra: str) -> RunningServer:
    """``marserve serve --storage-uri URI`` with nothing else about the model on the line."""
    port_file, log_path = tmp / "ports.json", tmp / "server.log"
    command = [sys.executable, "-m", "marserve", "serve", "--foreground", "--storage-uri", uri,
               "--storage-dir", str(tmp / "models"), "--port-file", str(port_file),
               "--pid-file", str(tmp / "pid"), *extra]  # fmt: skip
    full_env = {**os.environ, "HOME": str(tmp), **env}  # a private ~/.cache/marserve
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    deadline = time.monotonic() + READY_DEADLINE_S
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"marserve did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    server = RunningServer(process, json.loads(port_file.read_text()), log_path)
    server.wait_ready()
    return server


def assert_serves_mnist(tmp: Path, uri: str, env: dict[str, str], *extra: str) -> None:
    server = serve_uri(tmp, uri, env, *extra)
    try:
        response = server.client.post(
            "/v1/models/mnist:predict",
            content=V1_SAMPLE.read_bytes(),
            headers={"Host": "torchserve.kserve-test.example.com"},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": [2]}
    finally:
        assert server.stop() == 0, server.log()


def test_s3(tmp_path: Path, store: Path) -> None:
    import boto3

    with moto_s3() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_keys())
        s3.create_bucket(Bucket="models")
        for key, path in files(store):
            s3.upload_file(str(path), "models", f"torchserve/mnist/{key}")
        s3.close()
        env = {"AWS_ENDPOINT_URL": endpoint, **S3_KEYS}
        assert_serves_mnist(tmp_path, "s3://models/torchserve/mnist", env)


def test_gcs(tmp_path: Path, store: Path) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with gcs_emulator() as host:
        client = storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": host},
        )
        bucket = client.create_bucket("kfserving-examples")
        for key, path in files(store):
            bucket.blob(f"models/torchserve/image_classifier/v1/{key}").upload_from_filename(path)
        client.close()
        uri = "gs://kfserving-examples/models/torchserve/image_classifier/v1"
        assert_serves_mnist(tmp_path, uri, {"STORAGE_EMULATOR_HOST": host})


def test_azure_blob(tmp_path: Path, store: Path) -> None:
    from azure.storage.blob import BlobServiceClient

    with azurite(tmp_path) as connection:
        service = BlobServiceClient.from_connection_string(connection)
        container = service.create_container("models")
        for key, path in files(store):
            with path.open("rb") as data:
                container.upload_blob(f"mnist/{key}", data)
        service.close()
        uri = "https://devstoreaccount1.blob.core.windows.net/models/mnist"
        assert_serves_mnist(tmp_path, uri, {"AZURE_STORAGE_CONNECTION_STRING": connection})


def test_https_tarball(tmp_path: Path, store: Path) -> None:
    served = tmp_path / "www"
    served.mkdir()
    with tarfile.open(served / "mnist.tar.gz", "w:gz") as tar:
        for key, path in files(store):
            tar.add(path, arcname=key)
    with tls_server(served, tmp_path) as (base, bundle):
        trusted = ssl.create_default_context(cafile=str(bundle))
        assert httpx.get(f"{base}/mnist.tar.gz", verify=trusted).status_code == 200
        env = {"REQUESTS_CA_BUNDLE": str(bundle)}
        assert_serves_mnist(tmp_path, f"{base}/mnist.tar.gz", env)


def test_pvc_is_served_in_place(tmp_path: Path, store: Path) -> None:
    claim = f"model-pv-claim={store.parent}"
    assert_serves_mnist(tmp_path, f"pvc://model-pv-claim/{store.name}", {}, "--pvc", claim)
    assert not (tmp_path / "models").exists()  # read where it is, nothing copied


def test_file_uri(tmp_path: Path, store: Path) -> None:
    assert_serves_mnist(tmp_path, store.as_uri(), {})


def _keys() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
