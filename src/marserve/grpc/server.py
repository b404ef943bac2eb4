"""Builds, binds, starts and drains the gRPC listeners of one ``marserve serve`` process.

grpc_inference_address serves KServe's ``inference.GRPCInferenceService`` and TorchServe's
``InferenceAPIsService``; grpc_management_address serves TorchServe's ``ManagementAPIsService``
(one server when both name the same host and port). Messages are bounded by
``max_request_size`` / ``max_response_size`` (RESOURCE_EXHAUSTED beyond them); ports are bound
exclusively (no SO_REUSEPORT, so a port in use is an error, not a shared listener); https
addresses (``enable_grpc_ssl``) use ``private_key_file`` and ``certificate_file``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, Protocol

import grpc

from marserve.auth import TokenAuthority
from marserve.dataplane import DataPlane
from marserve.errors import ConfigError
from marserve.grpc.errors import Guard, Observer
from marserve.grpc.inference import (
    MANAGEMENT_METHODS,
    OPEN_METHODS,
    OpenInferenceService,
    TorchServeInferenceService,
)
from marserve.grpc.management import ManagementService
from marserve.management import ModelManager
from marserve.protocol.limits import DecodeLimits
from marserve.settings import Address, ServerSettings

log = logging.getLogger("marserve.grpc")

DRAIN_GRACE_S = 30.0
PROTOCOL = "grpc"  # the ``protocol`` label of gRPC requests in metrics
INFERENCE_METHODS = frozenset({"ModelInfer", "Predictions", "StreamPredictions"})


class RequestMetrics(Protocol):
    """What the gRPC listeners report to (``ServerMetrics`` has this shape)."""

    def observe_status(self, status: int) -> None: ...

    def observe_request(
        self,
        model: str | None,
        version: str | None,
        *,
        protocol: str,
        verb: str,
        status: int,
        seconds: float,
        error: BaseException | None = None,
    ) -> Any: ...


def metrics_observer(metrics: RequestMetrics) -> Observer:
    """Inference calls count as requests of their model; every call counts by its status."""

    def observe(
        method: str, request: Any, status: int, seconds: float, error: BaseException | None
    ) -> None:
        if method not in INFERENCE_METHODS:
            metrics.observe_status(status)
            return
        metrics.observe_request(
            getattr(request, "model_name", "") or None,
            getattr(request, "model_version", "") or None,
            protocol=PROTOCOL,
            verb="predict",
            status=status,
            seconds=seconds,
            error=error,
        )

    return observe


def _target(address: Address) -> str:
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"{host}:{address.port}"


def _credentials(settings: ServerSettings) -> grpc.ServerCredentials:
    key, cert = settings.private_key_file, settings.certificate_file
    if key is None or cert is None:
        raise ConfigError("enable_grpc_ssl=true needs private_key_file and certificate_file")
    return grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])


class GrpcListeners:
    """The gRPC servers: built from settings, started after the HTTP listeners, drained on stop."""

    def __init__(
        self,
        settings: ServerSettings,
        dataplane: DataPlane,
        manager: ModelManager,
        auth: TokenAuthority | None,
        limits: DecodeLimits,
        metrics: RequestMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.dataplane = dataplane
        self.manager = manager
        self.auth = auth
        self.limits = limits
        self._observe = metrics_observer(metrics) if metrics is not None else None
        self._servers: list[grpc.aio.Server] = []

    def _handlers(self, api: str) -> list[grpc.GenericRpcHandler]:
        if api == "management":
            guard = Guard(self.auth, "management", observe=self._observe)
            return [ManagementService(self.manager).handler(guard)]
        guard = Guard(self.auth, "inference", OPEN_METHODS, MANAGEMENT_METHODS, self._observe)
        return [
            OpenInferenceService(self.dataplane, self.manager, self.limits).handler(guard),
            TorchServeInferenceService(self.dataplane, self.limits).handler(guard),
        ]

    def _server(self, apis: list[str]) -> grpc.aio.Server:
        options = [
            ("grpc.max_receive_message_length", self.settings.max_request_size),
            ("grpc.max_send_message_length", self.settings.max_response_size),
            ("grpc.so_reuseport", 0),
            ("grpc.max_concurrent_streams", self.settings.grpc_max_concurrent_streams),
            # keep-alive enforcement: clients pinging more often than this get GOAWAY
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                1000 * self.settings.grpc_keepalive_min_time_s,
            ),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.max_connection_idle_ms", 1000 * self.settings.keep_alive_timeout_s),
            # gRPC rejects metadata between its soft and hard limits only at random: one limit.
            ("grpc.max_metadata_size", self.settings.max_header_size),
            ("grpc.absolute_max_metadata_size", self.settings.max_header_size),
        ]
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers([h for api in apis for h in self._handlers(api)])
        return server

    def _bind(self, server: grpc.aio.Server, address: Address) -> str:
        target = _target(address)
        try:
            if address.scheme == "https":
                port = server.add_secure_port(target, _credentials(self.settings))
            else:
                port = server.add_insecure_port(target)
        except RuntimeError as exc:
            raise OSError(f"cannot listen for gRPC on {target}: {exc}") from None
        if port == 0:
            raise OSError(f"cannot listen for gRPC on {target}")
        return dataclasses.replace(address, port=port).url

    def bind(self) -> dict[str, str]:
        """Build and bind every listener (a port in use fails here); the bound URLs by name
        (``grpc_inference``, ...). Calls are answered once :meth:`start` has run."""
        inference = self.settings.grpc_inference_address
        management = self.settings.grpc_management_address
        shared = inference == management and inference.port != 0
        apis = ["inference", "management"] if shared else ["inference"]
        plan = {"grpc_inference": (inference, apis)}
        if not shared:
            plan["grpc_management"] = (management, ["management"])
        urls: dict[str, str] = {}
        for name, (address, apis) in plan.items():
            server = self._server(apis)
            urls[name] = self._bind(server, address)
            extra = self.settings.kserve_grpc_port
            if name == "grpc_inference" and extra is not None:
                urls["grpc_kserve"] = self._bind(server, dataclasses.replace(address, port=extra))
            self._servers.append(server)
        if shared:
            urls["grpc_management"] = urls["grpc_inference"]
        return urls

    async def start(self) -> None:
        """Start answering on the listeners :meth:`bind` made."""
        for server in self._servers:
            await server.start()

    async def stop(self, grace: float = DRAIN_GRACE_S) -> None:
        """Refuse new calls, let in-flight ones finish for up to ``grace`` seconds, then close."""
        servers, self._servers = self._servers, []
        await asyncio.gather(*(server.stop(grace) for server in servers))
