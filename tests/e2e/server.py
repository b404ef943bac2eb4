"""Start a real ``marserve serve`` on ephemeral ports and wait for it, for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

READY_DEADLINE_S = 60.0


def write_config(path: Path, **extra: object) -> Path:
    lines = [
        "inference_address=http://127.0.0.1:0",
        "management_address=http://127.0.0.1:0",
        "metrics_address=http://127.0.0.1:0",
        "grpc_inference_port=0",
        "grpc_management_port=0",
        "disable_token_authorization=true",
    ]
    for key, value in extra.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        lines.append(f"{key}={value}")
    path.write_text("\n".join(lines) + "\n")
    return path


def snapshot(*models: dict[str, object]) -> dict[str, object]:
    """A TorchServe model_snapshot naming the given models (name, marName, ...)."""
    entries: dict[str, object] = {}
    for model in models:
        params = {
            "defaultVersion": True,
            "minWorkers": 1,
            "maxWorkers": 1,
            "batchSize": 1,
            "maxBatchDelay": 10,
            "responseTimeout": 120,
        }
        params.update({k: v for k, v in model.items() if k not in ("name", "version")})
        entries[str(model["name"])] = {str(model.get("version", "1.0")): params}
    return {"name": "startup.cfg", "modelCount": len(entries), "models": entries}


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    urls: dict[str, str]
    log_path: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.urls["inference"], timeout=30.0)

    @property
    def url(self) -> str:
        return self.urls["inference"]

    def grpc_target(self, api: str = "inference") -> str:
        """``host:port`` of the gRPC inference or management listener (what grpc clients take)."""
        return self.urls[f"grpc_{api}"].split("://", 1)[1]

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        import psutil

        return [child.pid for child in psutil.Process(self.pid).children(recursive=True)]

    def wait_ready(self, deadline_s: float = READY_DEADLINE_S) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"marserve exited early:\n{self.log()}")
            try:
                if self.client.get("/ping").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"marserve not ready within {deadline_s}s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def serve_command(model_store: Path, *args: str) -> list[str]:
    """``python -m marserve serve --foreground --model-store STORE ARGS...`` as an argv list."""
    serve = [sys.executable, "-m", "marserve", "serve", "--foreground"]
    return [*serve, "--model-store", str(model_store), *args]


def pin_inference_port(config: Path, port: int) -> None:
    """Move a :func:`write_config` file's inference address from port 0 to ``port``."""
    text = config.read_text().replace(
        "inference_address=http://127.0.0.1:0", f"inference_address=http://127.0.0.1:{port}"
    )
    config.write_text(text)


def start_server(
    tmp: Path,
    model_store: Path,
    config: Path,
    *extra_args: str,
    wait: bool = True,
    env: dict[str, str] | None = None,
) -> RunningServer:
    port_file = tmp / "ports.json"
    port_file.unlink(missing_ok=True)
    log_path = tmp / "server.log"
    command = serve_command(
        model_store,
        "--ts-config",
        str(config),
        "--port-file",
        str(port_file),
        "--pid-file",
        str(tmp / "marserve.pid"),
        *extra_args,
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    deadline = time.monotonic() + READY_DEADLINE_S
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"marserve did not start:\n{log_path.read_text()}")
        time.sleep(0.02)
    server = RunningServer(process, json.loads(port_file.read_text()), log_path)
    if wait:
        server.wait_ready()
    return server
