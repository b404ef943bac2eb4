"""storageUri pull speed: marserve's ``pull`` next to the vendor SDK's own download, same run.

    .venv/bin/python bench/storage.py [--mb 200] [--repeat 3]

Starts moto (S3) and gcp-storage-emulator (GCS) on 127.0.0.1, uploads a model store of
``--mb`` megabytes (config/config.properties and four model-store files of random bytes), then
alternates, ``--repeat`` times each: marserve ``pull`` with an empty cache, and the SDK's single
call per object (boto3 ``download_file``, google-cloud-storage ``download_to_filename``) into a
fresh folder. Prints the medians and the ratio (target: at most 1.2x).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.storage_servers import gcs_emulator, moto_s3

from marserve.storage import StorageSettings, pull

PREFIX = "bench/store"


def model_files(total_mb: int) -> dict[str, bytes]:
    part = total_mb * (1 << 20) // 4
    files = {"config/config.properties": b"model_store=/mnt/models/model-store\n"}
    for n in range(4):
        files[f"model-store/part{n}.mar"] = os.urandom(part)
    return files


def timed(action: Callable[[Path], None], work: Path) -> float:
    target = Path(tempfile.mkdtemp(dir=work))
    shutil.rmtree(target)
    start = time.perf_counter()
    action(target)
    elapsed = time.perf_counter() - start
    shutil.rmtree(target, ignore_errors=True)
    return elapsed


def compare(name: str, ours: Callable[[Path], None], sdk: Callable[[Path], None], n: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="marserve-bench-storage-"))
    try:
        mine, theirs = [], []
        for _ in range(n):
            theirs.append(timed(sdk, work))
            mine.append(timed(ours, work))
        a, b = statistics.median(mine), statistics.median(theirs)
        runs = f"runs: marserve {[round(x, 2) for x in mine]}, SDK {[round(x, 2) for x in theirs]}"
        print(f"{name:4} marserve {a:6.2f} s   SDK {b:6.2f} s   ratio {a / b:4.2f}x   ({runs})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fresh_cache() -> Path:
    return Path(tempfile.mkdtemp(prefix="marserve-bench-cache-"))


def bench_s3(files: dict[str, bytes], repeat: int) -> None:
    import boto3

    with moto_s3() as endpoint:
        keys = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys)
        s3.create_bucket(Bucket="models")
        for key, data in files.items():
            s3.put_object(Bucket="models", Key=f"{PREFIX}/{key}", Body=data)
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
               "AWS_SECRET_ACCESS_KEY": "bench"}  # fmt: skip

        def ours(dest: Path) -> None:
            cache = fresh_cache()
            pull(f"s3://models/{PREFIX}", dest, StorageSettings(cache_dir=cache, env=env))
            shutil.rmtree(cache)

        def sdk(dest: Path) -> None:
            for key in files:
                (dest / key).parent.mkdir(parents=True, exist_ok=True)
                s3.download_file("models", f"{PREFIX}/{key}", str(dest / key))

        compare("S3", ours, sdk, repeat)


def bench_gcs(files: dict[str, bytes], repeat: int) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with gcs_emulator() as host:
        client = storage.Client(
            project="bench",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": host},
        )
        bucket = client.create_bucket("models")
        for key, data in files.items():
            bucket.blob(f"{PREFIX}/{key}").upload_from_string(data)
        env = {"STORAGE_EMULATOR_HOST": host}

        def ours(dest: Path) -> None:
            cache = fresh_cache()
            pull(f"gs://models/{PREFIX}", dest, StorageSettings(cache_dir=cache, env=env))
            shutil.rmtree(cache)

        def sdk(dest: Path) -> None:
            for key in files:
                (dest / key).parent.mkdir(parents=True, exist_ok=True)
                bucket.blob(f"{PREFIX}/{key}").download_to_filename(str(dest / key))

        compare("GCS", ours, sdk, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    files = model_files(args.mb)
    print(f"pulling a {args.mb} MB model store ({len(files)} objects), {args.repeat} runs each")
    bench_s3(files, args.repeat)
    bench_gcs(files, args.repeat)


if __name__ == "__main__":
    main()
