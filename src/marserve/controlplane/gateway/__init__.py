"""The gateway: Knative's ingress and activator for local InferenceServices (HTTP/1.1 and h2c)."""

from marserve.controlplane.gateway.metrics import RevisionStats
from marserve.controlplane.gateway.proxy import Limits
from marserve.controlplane.gateway.server import Gateway, GatewaySettings, operator, settings_for

__all__ = ["Gateway", "GatewaySettings", "Limits", "RevisionStats", "operator", "settings_for"]
