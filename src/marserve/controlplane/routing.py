"""What the gateway routes to: the reconciler's view of services, revisions and ready replicas.

The reconciler builds these values from the store and its replicas and hands the whole set to a
``RouteSink`` (the gateway) after every change; the gateway never reads the store itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ready replica: its REST inference port and, for grpc-v2 services, its gRPC port."""

    host: str
    port: int
    grpc_port: int | None = None


@dataclass(frozen=True, slots=True)
class RevisionRoute:
    """A revision (``NAME-predictor-0000N``), its share of untagged traffic and its tag, if any."""

    name: str
    percent: int
    endpoints: tuple[Endpoint, ...] = ()
    tag: str | None = None
    container_concurrency: int = 0
    """Knative's ``containerConcurrency``: in-flight requests per replica, ``0`` for no limit."""
    timeout_s: float | None = None
    """The predictor's ``timeout`` (Knative's ``timeoutSeconds``): bounds a held request's wait."""


@dataclass(frozen=True, slots=True)
class ServiceRoute:
    """An InferenceService's predictor as the ingress sees it.

    ``hosts`` are the untagged hostnames (``NAME.NS.DOMAIN``, ``NAME-predictor.NS.DOMAIN``); a
    revision with a tag is also reachable on ``TAG-NAME-predictor.NS.DOMAIN`` as Knative names it.
    """

    namespace: str
    name: str
    domain: str
    revisions: tuple[RevisionRoute, ...]
    protocol: Literal["http", "grpc"] = "http"
    hosts: frozenset[str] = field(default_factory=frozenset)

    def tag_host(self, tag: str) -> str:
        return f"{tag}-{self.name}-predictor.{self.namespace}.{self.domain}"


class RouteSink(Protocol):
    """Receives the complete, current route set; each call replaces the previous one."""

    def update(self, services: Sequence[ServiceRoute]) -> None: ...
