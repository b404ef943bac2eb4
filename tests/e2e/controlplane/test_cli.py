"""``marserve apply/get/describe/delete/logs``: they start the controller when none runs and
print what kubectl prints (compared line for line with the pinned kubectl)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from marserve.controlplane.store import Store
from tests.e2e.controlplane.conftest import SAMPLES, START, kubectl_binary, start_controller

AGE = re.compile(r"\s\d+s$", re.MULTILINE)


class Cli:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {
            **os.environ,
            "MARSERVE_HOME": str(home),
            "MARSERVE_CONTROLLER_PORT": "0",
            "MARSERVE_GATEWAY_PORT": "0",
            "KUBECONFIG": str(home / "kubeconfig"),
            "HOME": str(home),
            "OMP_NUM_THREADS": "1",
        }

    def marserve(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", START, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            input=stdin,
            cwd=SAMPLES,
        )

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(kubectl_binary()), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=SAMPLES,
        )


def running(pid: int) -> bool:
    """Whether ``pid`` is alive (an exited one nobody has reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop(pid: int) -> None:
    """Stop the controller a verb started in the background (it is not our child)."""
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + 20
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if running(pid):
        os.kill(pid, signal.SIGKILL)


def test_a_verb_starts_the_controller_when_none_runs(tmp_path: Path) -> None:
    c = Cli(tmp_path)
    first = c.marserve("get", "inferenceservices")
    started = re.search(r"started one in the background \(pid (\d+)", first.stderr)
    assert started, first.stderr
    try:
        assert first.returncode == 0
        assert first.stderr.endswith("No resources found in default namespace.\n")
        assert oct((tmp_path / "kubeconfig").stat().st_mode & 0o777) == "0o600"
        again = c.marserve("get", "inferenceservices")
        assert again.stderr == "No resources found in default namespace.\n"
        assert c.kubectl("get", "inferenceservices").stderr == again.stderr
    finally:
        stop(int(started.group(1)))


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    home = tmp_path_factory.mktemp("cli-home")
    controller = start_controller(home)
    yield Cli(home)
    controller.stop()


def test_apply_is_idempotent_and_takes_turns_with_kubectl(cli: Cli) -> None:
    first = cli.marserve("apply", "-f", "torchserve.yaml")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "inferenceservice.serving.kserve.io/torchserve created\n"
    again = cli.marserve("apply", "-f", "torchserve.yaml")
    assert again.stdout == "inferenceservice.serving.kserve.io/torchserve unchanged\n"
    assert again.stderr == ""
    # kubectl agrees that nothing changed, so both keep the same last-applied bookkeeping
    assert cli.kubectl("apply", "-f", "torchserve.yaml").stdout.endswith("unchanged\n")
    docs = "\n---\n".join(
        (SAMPLES / f).read_text() for f in ("torchserve-v2.yaml", "torchserve-gpu.yaml")
    )
    both = cli.marserve("apply", "-f", "-", stdin=docs)
    assert both.stdout.splitlines() == [
        "inferenceservice.serving.kserve.io/torchserve-mnist-v2 created",
        "inferenceservice.serving.kserve.io/torchserve-gpu created",
    ]
    changed = (SAMPLES / "torchserve.yaml").read_text().replace("classifier/v1", "classifier/v2")
    assert cli.marserve("apply", "-f", "-", stdin=changed).stdout.endswith("configured\n")
    bad = cli.marserve("apply", "-f", "-", stdin=changed.replace("storageUri", "storageUrl"))
    assert bad.returncode == 1 and "spec.predictor.model.storageUrl" in bad.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("get", "inferenceservices"),
        ("get", "isvc", "-o", "wide"),
        ("get", "inferenceservice", "torchserve", "-o", "yaml"),
        ("get", "inferenceservices", "-o", "json"),
        ("get", "isvc", "-A"),
        ("describe", "inferenceservice", "torchserve"),
        ("get", "inferenceservice", "missing"),
        ("get", "pods", "-n", "kserve-test"),
    ],
    ids=" ".join,
)
def test_prints_what_kubectl_prints(cli: Cli, args: tuple[str, ...]) -> None:
    ours, theirs = cli.marserve(*args), cli.kubectl(*args)
    assert ours.returncode == theirs.returncode
    assert AGE.sub(" AGE", ours.stdout) == AGE.sub(" AGE", theirs.stdout)
    assert ours.stderr.strip() == theirs.stderr.strip()


def test_logs_and_delete(cli: Cli) -> None:
    pod = "torchserve-predictor-00001-deployment-7c9d-abcde"
    store = Store(cli.home / "controlplane.db")
    try:
        store.create(
            "pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod,
                    "namespace": "default",
                    "labels": {"serving.kserve.io/inferenceservice": "torchserve"},
                },
                "spec": {"containers": [{"name": "kserve-container"}]},
            },
        )
    finally:
        store.close()
    events = Store(cli.home / "controlplane.db")
    try:
        uid = events.get("inferenceservices.serving.kserve.io", "default", "torchserve")[
            "metadata"
        ]["uid"]
        events.create(
            "events",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": "torchserve.1",
                    "namespace": "default",
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                },
                "involvedObject": {
                    "kind": "InferenceService",
                    "name": "torchserve",
                    "namespace": "default",
                    "uid": uid,
                },
                "type": "Normal",
                "reason": "InferenceServiceReady",
                "source": {"component": "marserve"},
                "message": "InferenceService [torchserve] is Ready",
            },
        )
    finally:
        events.close()
    ours, theirs = (
        cli.marserve("describe", "isvc", "torchserve"),
        cli.kubectl("describe", "isvc", "torchserve"),
    )
    assert "InferenceServiceReady" in ours.stdout
    assert AGE.sub(" AGE", ours.stdout) == AGE.sub(" AGE", theirs.stdout)
    log = cli.home / "pods" / "default" / pod / "kserve-container.log"
    log.parent.mkdir(parents=True)
    log.write_text("one\ntwo\n")
    assert cli.marserve("logs", pod).stdout == cli.kubectl("logs", pod).stdout == "one\ntwo\n"
    assert cli.marserve("logs", "torchserve", "--tail", "1").stdout == "two\n"
    follow = subprocess.Popen(
        [sys.executable, "-c", START, "logs", pod, "-f"],
        env=cli.env,
        stdout=subprocess.PIPE,
    )
    try:
        assert follow.stdout is not None
        assert follow.stdout.readline() == b"one\n"
        assert follow.stdout.readline() == b"two\n"
        with log.open("a") as f:
            f.write("three\n")
        assert follow.stdout.readline() == b"three\n"
    finally:
        follow.terminate()
        follow.wait(10)
        if follow.stdout is not None:
            follow.stdout.close()
    out = cli.marserve("delete", "inferenceservice", "torchserve-gpu")
    assert out.stdout == cli.kubectl("delete", "isvc", "torchserve-mnist-v2").stdout.replace(
        "torchserve-mnist-v2", "torchserve-gpu"
    )
    assert (
        out.stdout
        == 'inferenceservice.serving.kserve.io "torchserve-gpu" deleted from default namespace\n'
    )
    gone = cli.marserve("get", "isvc", "torchserve-gpu")
    assert gone.returncode == 1 and "not found" in gone.stderr
