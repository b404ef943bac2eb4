"""Starting, probing and stopping a server under test: ports, config file, cold start, cleanup."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from bench import procs
from bench.payloads import Payload

# Variables that would silently tune either server; the benchmark runs both without them
# unless a configuration sets them on purpose (the one-thread TorchServe row does).
_TUNING_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TS_CONFIG_FILE")
_TUNING_PREFIXES = ("TS_", "MARSERVE_")


class ServerNotReady(RuntimeError):
    """The server exited or gave no successful prediction before its deadline."""


@dataclass(frozen=True, slots=True)
class Ports:
    """The loopback ports one server instance listens on."""

    inference: int
    management: int
    metrics: int
    grpc_inference: int
    grpc_management: int


def free_ports() -> Ports:
    """Five distinct free loopback ports (all held open together while being chosen)."""
    with ExitStack() as stack:
        numbers = []
        for _ in range(5):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            numbers.append(int(sock.getsockname()[1]))
    return Ports(*numbers)


def properties_text(ports: Ports, extra: dict[str, str] | None = None) -> str:
    """A config.properties binding every listener to 127.0.0.1 with token auth off."""
    lines = [
        f"inference_address=http://127.0.0.1:{ports.inference}",
        f"management_address=http://127.0.0.1:{ports.management}",
        f"metrics_address=http://127.0.0.1:{ports.metrics}",
        "grpc_inference_address=127.0.0.1",
        "grpc_management_address=127.0.0.1",
        f"grpc_inference_port={ports.grpc_inference}",
        f"grpc_management_port={ports.grpc_management}",
        "disable_token_authorization=true",
    ]
    lines += [f"{key}={value}" for key, value in (extra or {}).items()]
    return "\n".join(lines) + "\n"


def models_property(
    model: str, archive: str, workers: int, batch_size: int, max_batch_delay_ms: int
) -> str:
    """TorchServe's ``models`` key (both servers read it): the start-up model's workers and its
    dynamic batching, so the two run the same settings."""
    settings = {
        "defaultVersion": True,
        "marName": archive,
        "minWorkers": workers,
        "maxWorkers": workers,
        "batchSize": batch_size,
        "maxBatchDelay": max_batch_delay_ms,
        "responseTimeout": 120,
    }
    return json.dumps({model: {"1.0": settings}}, separators=(",", ":"))


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment minus thread/TorchServe/marserve tuning, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _TUNING_VARS and not key.startswith(_TUNING_PREFIXES)
    }
    env.update(extra or {})
    return env


class ManagedServer:
    """A server process tree started by the harness; subclasses say how to start and stop it."""

    name = "server"

    def __init__(self, run_dir: Path, ports: Ports) -> None:
        self.run_dir = run_dir
        self.ports = ports
        self.base_url = f"http://127.0.0.1:{ports.inference}"
        self.launched_at = 0.0
        self.popen: subprocess.Popen[bytes] | None = None
        self.seen: dict[int, int] = {}
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.run_dir / "server.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return clean_env()

    def root_pid(self) -> int | None:
        """The pid whose tree is the server (the launcher itself unless overridden)."""
        return self.popen.pid if self.popen is not None else None

    def start(self) -> None:
        """Launch the server in its own session with output to ``server.log``."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.launched_at = time.monotonic()
        self.popen = subprocess.Popen(
            self.command(),
            cwd=self.run_dir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def early_exit(self) -> str | None:
        """Why the server can no longer come up, or None while it still may."""
        if self.popen is not None and self.popen.poll() is not None:
            return f"exited with status {self.popen.returncode}"
        return None

    def snapshot(self) -> tuple[int, int]:
        """(summed RSS bytes, process count) of the server tree now; remembers every pid seen."""
        root = self.root_pid()
        if root is None:
            return 0, 0
        rss, pids = procs.tree_rss(root)
        self.seen.update(procs.identify(pids))
        return rss, len(pids)

    def graceful_stop(self) -> None:
        """Ask the server to stop (SIGTERM to the launcher by default)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def stop(self) -> list[int]:
        """Stop the whole tree; returns pids that had to be SIGKILLed (empty when clean)."""
        self.snapshot()
        try:
            self.graceful_stop()
        finally:
            left = procs.wait_gone(self.seen, timeout_s=30)
            procs.kill_all(left)
            if self.popen is not None:
                if self.popen.poll() is None:
                    self.popen.kill()
                self.popen.wait(timeout=10)
            if self._log is not None:
                self._log.close()
        return sorted(left)

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def probe(client: httpx.Client, base_url: str, payload: Payload) -> httpx.Response:
    """Send one request of ``payload``."""
    return client.post(base_url + payload.path, content=payload.body, headers=payload.headers)


def wait_first_prediction(server: ManagedServer, payload: Payload, timeout_s: float) -> float:
    """Poll with ``payload`` until a 2xx answer; return seconds since the server was launched."""
    deadline = server.launched_at + timeout_s
    last = "no answer"
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            try:
                response = probe(client, server.base_url, payload)
            except httpx.TransportError as exc:
                last = type(exc).__name__
            else:
                if response.is_success:
                    return time.monotonic() - server.launched_at
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            reason = server.early_exit()
            if reason is not None:
                raise ServerNotReady(f"{server.name} {reason}; last probe: {last}")
            time.sleep(0.02)
    raise ServerNotReady(f"{server.name} not ready after {timeout_s:.0f} s; last probe: {last}")
