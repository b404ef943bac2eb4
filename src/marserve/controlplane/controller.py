"""The composition root of ``marserve controller``: store, API, kubeconfig, operators."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from marserve.controlplane.api.app import build_app
from marserve.controlplane.config import ControllerConfig
from marserve.controlplane.seed import seed
from marserve.controlplane.store import Store
from marserve.controlplane.tls import ensure_identity

Operator = Callable[[Store, ControllerConfig], Coroutine[Any, Any, None]]
"""A background task (reconciler, gateway, autoscaler): runs until cancelled at shutdown."""


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def kubeconfig(config: ControllerConfig) -> str:
    """A kubeconfig with context ``marserve``: the HTTPS API, its certificate, the token."""
    cert, _ = ensure_identity(config.home)
    cluster = {
        "server": f"https://{config.host}:{config.port}",
        "certificate-authority-data": base64.b64encode(cert.read_bytes()).decode(),
    }
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "marserve", "cluster": cluster}],
        "users": [{"name": "marserve", "user": {"token": config.token}}],
        "contexts": [
            {
                "name": "marserve",
                "context": {"cluster": "marserve", "user": "marserve", "namespace": "default"},
            }
        ],
        "current-context": "marserve",
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write_kubeconfig(config: ControllerConfig) -> Path:
    path = config.home / "kubeconfig"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(kubeconfig(config))
    os.chmod(path, 0o600)
    return path


def stable_token(config: ControllerConfig) -> None:
    """Keep one bearer token under ``home`` (0600), so a kubeconfig survives restarts."""
    path = config.home / "token"
    if path.is_file() and path.read_text().strip():
        config.token = path.read_text().strip()
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(config.token)


def resolve_ports(config: ControllerConfig) -> None:
    """Replace ``0`` ports with free ones, so kubeconfig and Service say the real ones."""
    if config.port == 0:
        config.port = free_port(config.host)
    if config.gateway_port == 0:
        config.gateway_port = free_port(config.host)


def close_connections(server: uvicorn.Server) -> None:
    """Close what outlived the graceful shutdown (watch and log streams, TLS peers that never
    answered close_notify), so no socket is left to the garbage collector."""
    for connection in list(server.server_state.connections):
        transport = getattr(connection, "transport", None)
        if transport is not None and not transport.is_closing():
            transport.abort()


async def run_controller(
    config: ControllerConfig, operators: Sequence[Operator] = (), stop: asyncio.Event | None = None
) -> None:
    """Serve the API and run every operator until the server stops (signal or ``stop``)."""
    config.home.mkdir(parents=True, exist_ok=True)
    resolve_ports(config)
    stable_token(config)
    store = Store(config.db_path)
    seed(store, config)
    kube = write_kubeconfig(config)
    print(
        f"marserve controller: API on https://{config.host}:{config.port}, "
        f"export KUBECONFIG={kube}",
        file=sys.stderr,
        flush=True,
    )
    app = build_app(store, config)
    cert, key = ensure_identity(config.home)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=2,
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
        )
    )
    tasks: list[asyncio.Task[None]] = [asyncio.create_task(op(store, config)) for op in operators]
    if stop is not None:

        async def stopper(event: asyncio.Event) -> None:
            await event.wait()
            server.should_exit = True

        tasks.append(asyncio.create_task(stopper(stop)))
    try:
        await server.serve()
    finally:
        close_connections(server)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        store.close()
