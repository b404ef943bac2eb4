"""Composition root: builds stores, models, worker pools and listeners from settings; start/stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.middleware.cors import CORSMiddleware

from marserve import __version__
from marserve.auth import TokenAuthority
from marserve.dataplane import DataPlane
from marserve.management import ModelManager
from marserve.observability.access_log import AccessLog
from marserve.observability.metrics import ServerMetrics
from marserve.protocol.limits import DecodeLimits
from marserve.registry import ModelRegistry
from marserve.repository import ModelStore
from marserve.rest.app import application, inference_routes, management_routes
from marserve.rest.disconnect import CancelOnDisconnect
from marserve.rest.guard import ConnectionLimits, check_fd_headroom, protocol_for
from marserve.rest.metrics import ObservedApp, metrics_app, metrics_routes
from marserve.rest.origin import BrowserGuard, BrowserPolicy
from marserve.rest.tls import server_context, tls_only
from marserve.settings import Address, ServerSettings
from marserve.workers.pool import WarmProcesses

if TYPE_CHECKING:
    from marserve.grpc.server import GrpcListeners

log = logging.getLogger("marserve.server")

# The methods the APIs use, allowed cross-origin when cors_allowed_methods is not set.
CORS_DEFAULT_METHODS = ("GET", "POST", "PUT", "DELETE", "OPTIONS")


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the Server owns SIGTERM/SIGINT and draining."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(address: Address) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address.host, address.port))  # listen() comes when the server starts serving
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
        key_file: Path | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.settings = settings
        self.env = dict(env or {})
        self.port_file = port_file
        self.store = ModelStore(settings.model_store)
        self.registry = ModelRegistry()
        self.metrics = ServerMetrics(
            self.registry, system_metrics=not settings.disable_system_metrics
        )
        self.access_log = access_log or AccessLog()
        self.dataplane = DataPlane(self.registry)
        self.limits = DecodeLimits()
        self.connection_limits = ConnectionLimits.of(settings)
        self._staging = Path(tempfile.mkdtemp(prefix="marserve-models-"))
        self.manager = ModelManager(settings, self.store, self.registry, self._staging, self.env)
        self.auth = self._authority(key_file)
        self._browser_policy = BrowserPolicy.of(
            settings.allowed_hosts, settings.cors_allowed_origin
        )
        self.grpc: GrpcListeners | None = None
        self._servers: list[_Uvicorn] = []
        self._bound: list[tuple[_Uvicorn, socket.socket]] = []  # to serve once models are ready
        self._serving: list[asyncio.Task[None]] = []
        self.urls: dict[str, str] = {}
        self._stopped = asyncio.Event()
        self._tls: ssl.SSLContext | None = None

    def _authority(self, key_file: Path | None) -> TokenAuthority | None:
        if self.settings.disable_token_authorization:
            return None
        home = self.settings.model_server_home or Path.cwd()
        path = key_file or home / "key_file.json"
        authority = TokenAuthority(path, self.settings.token_expiration_min)
        log.warning("token authorization is on: keys are in %s", path)
        return authority

    # lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind every port first (a port in use fails at once), load the start-up models and
        wait for their workers, then listen: as in TorchServe, a client (or a TCP readiness
        probe) that reaches a port finds the start-up models ready, never a 404 or 503."""
        self._listen()
        self._bind_grpc()
        await self.manager.load_startup_models()
        await self._serve_bound()
        if self.grpc is not None:
            await self.grpc.start()
        if self.manager.warm is not None:
            await self.manager.warm.close()  # pre-started workers that no model took
        self._write_port_file()

    async def _serve_bound(self) -> None:
        """Start the HTTP servers on their bound sockets and wait until they listen."""
        loop = asyncio.get_running_loop()
        bound, self._bound = self._bound, []
        for server, sock in bound:
            self._serving.append(loop.create_task(server.serve(sockets=[sock])))
        while not all(server.started for server, _ in bound):
            failed = [task for task in self._serving if task.done()]
            if failed:
                await failed[0]  # raises what stopped it
                raise OSError("an HTTP listener stopped while starting")
            await asyncio.sleep(0.005)

    def _listen(self) -> None:
        """Inference and management listeners; one app when both share an address."""
        settings = self.settings
        inference = inference_routes(
            self.dataplane,
            self.manager,
            self.auth,
            max_request_size=settings.max_request_size,
            limits=self.limits,
        )
        management = management_routes(self.manager, self.auth)
        metrics_at = self._metrics_at()
        if metrics_at == "inference":
            inference += metrics_routes(self.metrics)
        elif metrics_at == "management":
            management += metrics_routes(self.metrics)
        if settings.management_address == settings.inference_address:
            url = self._serve_http(
                settings.inference_address, self._observed(application(inference, management))
            )
            self.urls["inference"] = self.urls["management"] = url
        else:
            self.urls["inference"] = self._serve_http(
                settings.inference_address, self._observed(application(inference))
            )
            self.urls["management"] = self._serve_http(
                settings.management_address, self._observed(application(management))
            )
        if metrics_at == "own":
            self.urls["metrics"] = self._serve_http(
                settings.metrics_address, self._browser_safe(metrics_app(self.metrics))
            )
        elif metrics_at is not None:
            self.urls["metrics"] = self.urls[metrics_at]
        check_fd_headroom(len(self._servers), self.connection_limits)

    def _metrics_at(self) -> str | None:
        """Where ``/metrics`` is served: on its own address, on a listener it shares, or not."""
        settings = self.settings
        if not settings.enable_metrics_api:
            return None
        address = settings.metrics_address
        if address.port != 0:  # port 0 means "any free port": never the same listener
            if address == settings.inference_address:
                return "inference"
            if address == settings.management_address:
                return "management"
        return "own"

    def _observed(self, app: Any) -> ObservedApp:
        """An API app behind the browser guard (and CORS when configured), stopped when its
        client leaves, measured for metrics and the access log (scrapes are not counted)."""
        return ObservedApp(
            CancelOnDisconnect(self._browser_safe(app)),
            self.metrics,
            self.access_log,
            skip=("/metrics",),
        )

    def _browser_safe(self, app: Any) -> Any:
        """``app`` behind the DNS-rebinding and cross-site checks, then TorchServe's CORS keys."""
        settings, policy = self.settings, self._browser_policy
        guarded: Any = BrowserGuard(app, policy)
        if policy.allowed_origin is None:
            return guarded
        return CORSMiddleware(
            guarded,
            allow_origins=[policy.allowed_origin],
            allow_methods=settings.cors_allowed_methods or CORS_DEFAULT_METHODS,
            allow_headers=settings.cors_allowed_headers or ("*",),
        )

    def _bind_grpc(self) -> None:
        """gRPC listeners (v2 and TorchServe inference, TorchServe management), bound."""
        from marserve.grpc import prepare_runtime

        prepare_runtime()
        from marserve.grpc.server import GrpcListeners  # imports grpc: after prepare_runtime

        self.grpc = GrpcListeners(
            self.settings, self.dataplane, self.manager, self.auth, self.limits, self.metrics
        )
        self.urls.update(self.grpc.bind())

    def _protocol(self, address: Address) -> type[asyncio.Protocol]:
        """The connection protocol of a listener: HTTPS ones take TLS only (``rest.tls``)."""
        protocol = protocol_for(self.connection_limits)
        if address.scheme != "https":
            return protocol
        if self._tls is None:
            self._tls = server_context(self.settings)
        return tls_only(protocol, self._tls)

    def _serve_http(self, address: Address, app: Any) -> str:
        protocol = self._protocol(address)
        sock = bind(address)
        config = uvicorn.Config(
            app,
            proxy_headers=False,  # client addresses are only logged; one ASGI layer less
            log_level="warning",
            access_log=False,
            lifespan="off",
            http=protocol,
            loop="none",
            timeout_keep_alive=self.connection_limits.keep_alive_s,
            timeout_graceful_shutdown=30,
        )
        config.load()  # now, while the models load, not on the way to the first answer
        server = _Uvicorn(config)
        self._servers.append(server)
        self._bound.append((server, sock))
        return bound_url(address, sock)

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

    async def stop(self) -> None:
        """Drain: readiness turns 503, listeners stop, in-flight requests finish, workers exit."""
        self.dataplane.draining = True
        for _, sock in self._bound:  # bound, never served (start-up did not finish)
            sock.close()
        for server in self._servers:
            server.should_exit = True
        grpc_stop = [self.grpc.stop()] if self.grpc is not None else []
        await asyncio.gather(*self._serving, *grpc_stop, return_exceptions=True)
        await self.manager.stop()
        shutil.rmtree(self._staging, ignore_errors=True)


async def run_server(
    settings: ServerSettings,
    *,
    env: Mapping[str, str],
    port_file: Path | None = None,
    key_file: Path | None = None,
    access_log: AccessLog | None = None,
    warm: WarmProcesses | None = None,
) -> None:
    """Start, serve until SIGTERM/SIGINT, drain and stop."""
    server = Server(
        settings, env=env, port_file=port_file, key_file=key_file, access_log=access_log
    )
    server.manager.warm = warm
    server.install_signal_handlers()
    try:
        await server.start()
        urls = " ".join(f"{k}={v}" for k, v in server.urls.items())
        log.warning("marserve %s listening: %s", __version__, urls)
        await server.wait()
    finally:
        await server.stop()
