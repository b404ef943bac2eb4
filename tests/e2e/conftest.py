"""Fixtures: model stores built with the real archivers, and running servers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import RunningServer, snapshot, start_server, write_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "mnist"
PROBE = Path(__file__).resolve().parent / "probe"
ARCHIVER = Path(sys.executable).parent / "torch-model-archiver"


def run(*command: str | Path) -> None:
    subprocess.run([str(c) for c in command], check=True, capture_output=True)


@pytest.fixture(scope="session")
def mnist_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's model store, built by its one command (``marserve archive`` inside)."""
    out = tmp_path_factory.mktemp("mnist-store")
    run(sys.executable, EXAMPLE / "build_store.py", "--out", out)
    return out


@pytest.fixture(scope="session")
def probe_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding ``probe.mar``, made by the real torch-model-archiver 0.12."""
    store = tmp_path_factory.mktemp("probe-store")
    weights = store / "empty.bin"
    weights.write_bytes(b"")
    run(
        ARCHIVER,
        "--model-name",
        "probe",
        "--version",
        "1.0",
        "--serialized-file",
        weights,
        "--handler",
        PROBE / "probe_handler.py",
        "--export-path",
        store,
    )
    weights.unlink()
    return store


@pytest.fixture(scope="session")
def ts_mnist_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MNIST example archived by the real torch-model-archiver (handler imports ``ts.*``)."""
    store = tmp_path_factory.mktemp("ts-mnist-store")
    run(
        ARCHIVER,
        "--model-name",
        "mnist",
        "--version",
        "1.0",
        "--model-file",
        EXAMPLE / "mnist.py",
        "--serialized-file",
        EXAMPLE / "mnist_cnn.pt",
        "--handler",
        EXAMPLE / "mnist_handler.py",
        "--export-path",
        store,
    )
    return store


@pytest.fixture(scope="module")
def mnist_server(
    tmp_path_factory: pytest.TempPathFactory, mnist_store: Path
) -> Iterator[RunningServer]:
    """The example's store served with its own config.properties (ports replaced by 0)."""
    tmp = tmp_path_factory.mktemp("mnist-server")
    config = write_config(
        tmp / "config.properties",
        model_snapshot=snapshot({"name": "mnist", "marName": "mnist.mar", "maxWorkers": 2}),
    )
    server = start_server(tmp, mnist_store / "model-store", config)
    yield server
    assert server.stop() == 0, server.log()
