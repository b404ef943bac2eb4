"""install_py_dep_per_model: an archive's requirements.txt lands in a per-model folder only."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from tests.e2e.conftest import ARCHIVER
from tests.e2e.server import snapshot, start_server, write_config

HERE = Path(__file__).resolve().parent


def build_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel of ``tinydep`` (no network, no build backend)."""
    files = {
        "tinydep/__init__.py": b"VALUE = 42\n",
        "tinydep-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinydep\nVersion: 1.0\n",
        "tinydep-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("tinydep-1.0.dist-info/RECORD,,")
    wheel = folder / "tinydep-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("tinydep-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


def make_store(tmp_path: Path) -> Path:
    """deps.mar: a handler importing ``tinydep``, a requirements.txt naming its bundled wheel."""
    build = tmp_path / "build"
    build.mkdir()
    wheel = build_wheel(build)
    requirements = build / "requirements.txt"
    requirements.write_text(f"--no-index\n./{wheel.name}\n")
    weights = build / "empty.bin"
    weights.write_bytes(b"")
    store = tmp_path / "store"
    store.mkdir()
    subprocess.run(
        [str(ARCHIVER), "--model-name", "deps", "--version", "1.0", "--serialized-file",
         str(weights), "--handler", str(HERE / "deps" / "deps_handler.py"),
         "--requirements-file", str(requirements), "--extra-files", str(wheel),
         "--export-path", str(store)],
        check=True, capture_output=True,
    )  # fmt: skip
    return store


def test_requirements_are_installed_per_model(tmp_path: Path) -> None:
    assert importlib.util.find_spec("tinydep") is None
    store = make_store(tmp_path)
    config = write_config(
        tmp_path / "config.properties",
        install_py_dep_per_model="true",
        model_snapshot=snapshot({"name": "deps", "marName": "deps.mar"}),
    )
    server = start_server(tmp_path, store, config)
    try:
        reply = server.client.post("/predictions/deps", json={})
        assert reply.status_code == 200, server.log()
        assert reply.json()["value"] == 42
        where = reply.json()["where"]
        assert "-deps" in where and not where.startswith(sys.prefix)
    finally:
        assert server.stop() == 0
    assert importlib.util.find_spec("tinydep") is None


def test_requirements_are_ignored_unless_enabled(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    config = write_config(
        tmp_path / "config.properties",
        model_snapshot=snapshot({"name": "deps", "marName": "deps.mar"}),
    )
    server = start_server(tmp_path, store, config, wait=False)
    try:
        deadline = time.monotonic() + 30
        while "No module named 'tinydep'" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "No module named 'tinydep'" in server.log()
        assert server.client.get("/ping").status_code == 503
        assert server.client.post("/predictions/deps", json={}).status_code == 503
    finally:
        assert server.stop() == 0
