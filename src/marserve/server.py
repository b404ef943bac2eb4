"""Composition root: builds stores, models, worker pools and listeners from settings; start/stop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from marserve import __version__
from marserve.archive import ExtractedArchive, extract_archive
from marserve.dataplane import DataPlane
from marserve.protocol.limits import DecodeLimits
from marserve.registry import ModelHandle, ModelRegistry
from marserve.repository import ModelStore, model_name_from_archive
from marserve.rest.app import inference_app
from marserve.settings import Address, ModelConfig, ServerSettings, load_model_yaml, model_config
from marserve.workers.messages import LoadModel
from marserve.workers.pool import PoolConfig, WorkerPool

log = logging.getLogger("marserve.server")


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the Server owns SIGTERM/SIGINT and draining."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A model to load at start-up: where its archive is and the settings it was named with."""

    path: Path
    config: ModelConfig | None  # from model_snapshot/models; None for load_models entries
    name: str | None = None


def bind(address: Address) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address.host, address.port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def bound_url(address: Address, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{address.scheme}://{shown}:{port}"


class Server:
    """One ``marserve serve`` process: the front (HTTP) and every model's worker pool."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        env: Mapping[str, str] | None = None,
        port_file: Path | None = None,
    ) -> None:
        self.settings = settings
        self.env = dict(env or {})
        self.port_file = port_file
        self.store = ModelStore(settings.model_store)
        self.registry = ModelRegistry()
        self.dataplane = DataPlane(self.registry)
        self.limits = DecodeLimits()
        self._worker_index = itertools.count()
        self._staging = Path(tempfile.mkdtemp(prefix="marserve-models-"))
        self._servers: list[_Uvicorn] = []
        self._sockets: list[socket.socket] = []
        self.urls: dict[str, str] = {}
        self._stopped = asyncio.Event()

    # models -------------------------------------------------------------------------------
    def startup_models(self) -> list[ModelSource]:
        """The snapshot's models, then ``load_models`` entries not already named there."""
        sources = [
            ModelSource(self.store.resolve(cfg.mar_name or f"{cfg.name}.mar"), cfg, cfg.name)
            for cfg in self.settings.models
        ]
        named = {cfg.name for cfg in self.settings.models}
        for entry in self.settings.load_models:
            if entry == "all":
                for path in self.store.archives():
                    if model_name_from_archive(path) not in named:
                        sources.append(ModelSource(path, None))
                continue
            name, _, archive = entry.partition("=")
            if not archive:
                name, archive = "", name
            path = self.store.resolve(archive)
            model = name or model_name_from_archive(path)
            if model not in named:
                sources.append(ModelSource(path, None, name or None))
        return sources

    def _torch_threads(self, total_workers: int) -> int:
        configured = self.env.get("OMP_NUM_THREADS", "")
        if configured.isdigit() and int(configured) > 0:
            return int(configured)
        return max(1, (os.cpu_count() or 1) // max(1, total_workers))

    def _effective_config(self, source: ModelSource, extracted: ExtractedArchive) -> ModelConfig:
        manifest = extracted.manifest
        yaml_config: dict[str, Any] | None = None
        if manifest.config_file:
            data = (extracted.path / manifest.config_file).read_bytes()
            yaml_config = load_model_yaml(data, f"{source.path.name}:{manifest.config_file}")
        name = source.name or (source.config.name if source.config else manifest.model_name)
        version = source.config.version if source.config else manifest.model_version
        return model_config(
            name,
            version,
            self.settings,
            yaml_config=yaml_config,
            auto_workers=os.cpu_count() or 1,
        )

    async def load_model(self, source: ModelSource, torch_threads: int) -> ModelHandle:
        extracted = await asyncio.to_thread(extract_archive, source.path, self._staging)
        config = self._effective_config(source, extracted)
        manifest = extracted.manifest
        version = config.version or manifest.model_version or "1.0"
        deps_dir = None
        if self.settings.install_py_dep_per_model and manifest.requirements_file:
            deps_dir = str(extracted.path.parent / f"{extracted.path.name}-deps")
        load = LoadModel(
            model_name=config.name,
            model_version=version,
            model_dir=str(extracted.path),
            manifest=dict(manifest.raw),
            handler=manifest.handler,
            batch_size=config.batch_size,
            worker_index=0,
            torch_threads=torch_threads,
            model_yaml_config=dict(config.yaml_config),
            deps_dir=deps_dir,
            server_version=__version__,
        )
        pool = WorkerPool(
            load,
            PoolConfig(
                min_workers=config.min_workers,
                max_workers=config.max_workers,
                response_timeout_s=float(config.response_timeout_s),
                startup_timeout_s=float(config.startup_timeout_s),
            ),
            lambda: next(self._worker_index),
        )
        handle = ModelHandle(
            name=config.name,
            version=version,
            config=config,
            manifest=manifest,
            model_dir=extracted.path,
            pool=pool,
            queue_limit=config.job_queue_size or self.settings.job_queue_size,
        )
        self.registry.add(handle, default=config.default_version)
        pool.start()
        log.info(
            "model %s version %s: starting %d worker(s)", config.name, version, config.min_workers
        )
        return handle

    # lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the listeners first (so a client can poll readiness), then load every model."""
        self._listen()
        sources = self.startup_models()
        planned = sum(
            max(1, cfg.min_workers) if cfg else max(1, self._default_workers())
            for cfg in (s.config for s in sources)
        )
        threads = self._torch_threads(planned)
        for source in sources:
            await self.load_model(source, threads)
        self._write_port_file()

    def _default_workers(self) -> int:
        return self.settings.default_workers_per_model or (os.cpu_count() or 1)

    def _listen(self) -> None:
        app = inference_app(
            self.dataplane, max_request_size=self.settings.max_request_size, limits=self.limits
        )
        address = self.settings.inference_address
        sock = bind(address)
        self._sockets.append(sock)
        self.urls["inference"] = bound_url(address, sock)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            http="httptools",
            loop="none",
            timeout_keep_alive=30,
            timeout_graceful_shutdown=30,
        )
        server = _Uvicorn(config)
        self._servers.append(server)
        self._serving = [asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))]

    def _write_port_file(self) -> None:
        if self.port_file is None:
            return
        payload = {"pid": os.getpid(), **self.urls}
        tmp = self.port_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(self.port_file)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopped.set)

    async def wait(self) -> None:
        await self._stopped.wait()

    def request_stop(self) -> None:
        self._stopped.set()

    async def stop(self) -> None:
        """Drain: readiness turns 503, listeners stop, in-flight requests finish, workers exit."""
        self.dataplane.draining = True
        for server in self._servers:
            server.should_exit = True
        await asyncio.gather(*self._serving, return_exceptions=True)
        for handle in list(self.registry):
            await handle.stop()
        shutil.rmtree(self._staging, ignore_errors=True)


async def run_server(
    settings: ServerSettings, *, env: Mapping[str, str], port_file: Path | None = None
) -> None:
    """Start, serve until SIGTERM/SIGINT, drain and stop."""
    server = Server(settings, env=env, port_file=port_file)
    server.install_signal_handlers()
    try:
        await server.start()
        urls = " ".join(f"{k}={v}" for k, v in server.urls.items())
        log.warning("marserve %s listening: %s", __version__, urls)
        await server.wait()
    finally:
        await server.stop()
