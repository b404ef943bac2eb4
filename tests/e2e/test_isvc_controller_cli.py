"""``marserve controller`` as a user runs it: a restart under a running service adopts its
replica (same pid, never a failed request), and delete stops it."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import psutil
import pytest

from tests.e2e.isvc_harness import (
    ISVCS,
    PODS,
    condition,
    port_of,
    predict_v1,
    sample,
    start_cli_controller,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, mnist_store: Path) -> Path:
    root = tmp_path_factory.mktemp("cli-store") / "good"
    shutil.copytree(mnist_store, root)
    return root


def test_cli_controller_restart_adopts_replicas_and_delete_stops_them(
    tmp_path: Path, store: Path
) -> None:
    home, log = tmp_path / "home", tmp_path / "controller.log"
    home.mkdir()
    process, api = start_cli_controller(home, log)
    pids: list[int] = []
    try:
        response = api.post(ISVCS, json=sample("torchserve.yaml", store.as_uri()))
        assert response.status_code == 201, response.text
        ready = lambda: condition(api.get(f"{ISVCS}/torchserve").json(), "Ready").get("status")  # noqa: E731
        wait_for(lambda: ready() == "True", f"Ready True\n{log.read_text()}")
        pod = api.get(PODS).json()["items"][0]
        pids.append(int(pod["metadata"]["annotations"]["marserve.dev/pid"]))
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) in (0, -signal.SIGTERM), log.read_text()
        api.close()
        assert predict_v1(port_of(pod)).json() == {"predictions": [2]}  # served with no controller
        process, api = start_cli_controller(home, log)
        wait_for(lambda: ready() == "True", "Ready True after the restart")
        again = api.get(PODS).json()["items"]
        assert [p["metadata"]["annotations"]["marserve.dev/pid"] for p in again] == [str(pids[0])]
        assert again[0]["status"]["containerStatuses"][0]["restartCount"] == 0
        assert predict_v1(port_of(pod)).json() == {"predictions": [2]}
        assert api.delete(f"{ISVCS}/torchserve").status_code == 200
        wait_for(lambda: not api.get(PODS).json()["items"], "the pods deleted")
        wait_for(lambda: not psutil.pid_exists(pids[0]), "the replica stopped", 30)
        assert not (home / "isvc" / "default" / "torchserve").exists()
    finally:
        api.close()
        process.terminate()
        process.wait(30)
        for pid in pids:
            if psutil.pid_exists(pid):
                os.killpg(pid, signal.SIGKILL)
