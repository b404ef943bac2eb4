"""A small client of the controller's API for ``marserve apply/get/...``; starts the controller
in the background when none answers."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from marserve.controlplane.resources import INFERENCESERVICES, Resource, lookup

START = "from marserve.cli.main import main; main()"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


class ApiFailure(Exception):
    """A non-2xx answer: its Status reason and message, as kubectl prints them."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


class KubeClient:
    """Requests with the kubeconfig's server, token and certificate."""

    def __init__(self, home: Path) -> None:
        doc = yaml.safe_load((home / "kubeconfig").read_text())
        self.server = doc["clusters"][0]["cluster"]["server"]
        self.namespace = doc["contexts"][0]["context"].get("namespace", "default")
        token = doc["users"][0]["user"]["token"]
        context = ssl.create_default_context(cafile=str(home / "apiserver.crt"))
        self.http = httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "marserve"},
            verify=context,
            timeout=httpx.Timeout(30, read=None),
        )

    def close(self) -> None:
        self.http.close()

    def alive(self) -> bool:
        try:
            return self.http.get("/version", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                status = response.json()
            except ValueError:
                status = {"reason": "Unknown", "message": response.text}
            raise ApiFailure(
                response.status_code, str(status.get("reason", "")), str(status.get("message"))
            )
        return response.json()

    def stream(self, path: str, params: dict[str, str]) -> Iterator[bytes]:
        with self.http.stream("GET", path, params=params) as response:
            if response.status_code >= 400:
                status = orjson.loads(response.read())
                raise ApiFailure(response.status_code, status["reason"], status["message"])
            yield from response.iter_bytes()


def path_for(res: Resource, namespace: str, name: str | None = None) -> str:
    prefix = "/api/v1" if res.group_version == "v1" else f"/apis/{res.group_version}"
    ns = f"/namespaces/{namespace}" if res.namespaced else ""
    return f"{prefix}{ns}/{res.plural}" + (f"/{name}" if name else "")


def resource_of(doc: dict[str, Any]) -> Resource | None:
    """The served resource of a manifest's apiVersion/kind."""
    for res in (INFERENCESERVICES, lookup("v1", "namespaces")):
        if res and (doc.get("apiVersion"), doc.get("kind")) == (res.group_version, res.kind):
            return res
    return None


def _spawn(home: Path) -> int:
    port = os.environ.get("MARSERVE_CONTROLLER_PORT", "6443")
    gateway = os.environ.get("MARSERVE_GATEWAY_PORT", "8080")
    home.mkdir(parents=True, exist_ok=True)
    with (home / "controller.log").open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                START,
                "controller",
                "--port",
                port,
                "--gateway-port",
                gateway,
                "--home",
                str(home),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process.pid


def connect(home: Path, *, deadline_s: float = 60) -> KubeClient:
    """A client of the running controller, starting one in the background when none answers
    (and saying so on stderr)."""
    kube = home / "kubeconfig"
    if kube.exists():
        client = KubeClient(home)
        if client.alive():
            return client
        client.close()
        kube.unlink()
    pid = _spawn(home)
    print(
        f"marserve: no controller was running; started one in the background (pid {pid}, "
        f"log {home / 'controller.log'})",
        file=sys.stderr,
    )
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if kube.exists():
            try:
                client = KubeClient(home)
            except (OSError, yaml.YAMLError, KeyError, TypeError, ssl.SSLError):
                time.sleep(0.1)
                continue
            if client.alive():
                return client
            client.close()
        time.sleep(0.1)
    raise RuntimeError(
        f"the controller did not start within {deadline_s:.0f} s; see {home / 'controller.log'}"
    )
