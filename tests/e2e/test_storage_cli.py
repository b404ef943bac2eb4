"""``marserve storage pull URI DEST``: quiet off a terminal, one-line errors, exit status 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.storage_servers import moto_s3

pytestmark = pytest.mark.slow


def storage_pull(tmp: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "marserve", "storage", "pull", *args]
    full = {**os.environ, "HOME": str(tmp), **env}
    return subprocess.run(command, capture_output=True, text=True, env=full, timeout=60)


def test_pull_from_s3_then_errors(tmp_path: Path) -> None:
    import boto3

    with moto_s3() as endpoint:
        keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys)
        s3.create_bucket(Bucket="models")
        s3.put_object(Bucket="models", Key="m/config/config.properties", Body=b"a=1\n")
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "secret-value"}  # fmt: skip
        done = storage_pull(tmp_path, "s3://models/m", str(tmp_path / "out"), env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == str(tmp_path / "out") and done.stderr == ""
        assert (tmp_path / "out" / "config" / "config.properties").read_bytes() == b"a=1\n"
        assert (tmp_path / ".cache" / "marserve" / "storage").is_dir()
        failed = storage_pull(tmp_path, "s3://models/none", str(tmp_path / "x"), env=env)
        assert failed.returncode == 1
        assert (
            failed.stderr.strip() == "Error: Cannot pull s3://models/none: no such key (HTTP 404)"
        )
    bad = storage_pull(tmp_path, "hf://owner/model", str(tmp_path / "y"), env={})
    assert bad.returncode == 1 and "storage scheme hf:// is not supported" in bad.stderr
    usage = storage_pull(tmp_path, "pvc://c", str(tmp_path / "z"), "--pvc", "nodir", env={})
    assert usage.returncode == 2 and "expected CLAIM=DIR" in usage.stderr
