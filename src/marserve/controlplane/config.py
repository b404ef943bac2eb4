"""The controller's configuration, built once at the edge and passed down."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 6443
DEFAULT_GATEWAY_PORT = 8080
DEFAULT_HOLD_S = 300.0  # Knative's default revision timeout bounds the activator's wait


@dataclass(slots=True)
class ControllerConfig:
    """Where state lives and which ports and domain the controller uses (``0`` = a free port)."""

    home: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    gateway_port: int = DEFAULT_GATEWAY_PORT
    domain: str = "example.com"
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    gateway_token: str | None = None
    """When set, the gateway answers 401 to requests without ``Authorization: Bearer <it>``."""
    autoscaler: dict[str, str] = field(default_factory=dict)
    """``config-autoscaler`` keys over Knative's defaults (``stable-window: 6s``, ...)."""
    hold_s: float = DEFAULT_HOLD_S
    """How long the gateway (the activator) holds a request for a revision with no ready replica."""

    @property
    def db_path(self) -> Path:
        return self.home / "controlplane.db"

    @property
    def pods_dir(self) -> Path:
        """Replica logs: ``pods/NAMESPACE/POD/CONTAINER.log``."""
        return self.home / "pods"
