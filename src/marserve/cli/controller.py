"""``marserve controller`` and ``marserve kubeconfig``: thin commands over the control plane."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from marserve.controlplane.autoscaler import Defaults
    from marserve.controlplane.controller import Operator
    from marserve.controlplane.gateway import Gateway
    from marserve.controlplane.routing import RouteSink


def marserve_home() -> Path:
    return Path(os.environ.get("MARSERVE_HOME") or Path.home() / ".marserve")


@click.command()
@click.option(
    "--port", type=int, default=6443, show_default=True, help="API port; 0 picks a free one."
)
@click.option(
    "--gateway-port", type=int, default=8080, show_default=True, help="0 picks a free one."
)
@click.option(
    "--gateway-token",
    envvar="MARSERVE_GATEWAY_TOKEN",
    default=None,
    help="Require `Authorization: Bearer TOKEN` on the gateway (env MARSERVE_GATEWAY_TOKEN).",
)
@click.option("--domain", default="example.com", show_default=True)
@click.option(
    "--autoscaler",
    "autoscaler",
    multiple=True,
    metavar="KEY=VALUE",
    help="A config-autoscaler key over Knative's defaults, e.g. stable-window=6s (repeatable).",
)
@click.option(
    "--hold-s",
    type=float,
    default=300.0,
    show_default=True,
    help="How long the gateway holds a request while its revision has no ready replica.",
)
@click.option(
    "--home", type=click.Path(path_type=Path), default=None, help="Default: $MARSERVE_HOME."
)
def controller(
    port: int,
    gateway_port: int,
    gateway_token: str | None,
    domain: str,
    autoscaler: tuple[str, ...],
    hold_s: float,
    home: Path | None,
) -> None:
    """Run the local KServe controller (Kubernetes API on 127.0.0.1) in the foreground.

    The gateway (Host-header ingress for every InferenceService, HTTP/1.1 and h2c) listens on
    127.0.0.1:GATEWAY_PORT; the reconciler runs each service's replicas behind it.
    """
    from marserve.controlplane.autoscaler import defaults_from
    from marserve.controlplane.config import ControllerConfig
    from marserve.controlplane.controller import run_controller
    from marserve.controlplane.gateway import Gateway, operator, settings_for

    config = ControllerConfig(
        home=home or marserve_home(),
        port=port,
        gateway_port=gateway_port,
        domain=domain,
        gateway_token=gateway_token,
        autoscaler=_pairs(autoscaler),
        hold_s=hold_s,
    )
    try:
        defaults = defaults_from(config.autoscaler)
    except ValueError as bad:
        raise click.BadParameter(str(bad), param_hint="--autoscaler") from None
    gateway = Gateway(settings_for(config, hold_s=config.hold_s))
    reconciler = reconciler_operator(gateway, gateway, defaults)
    asyncio.run(run_controller(config, [operator(gateway), reconciler]))


def _pairs(items: tuple[str, ...]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--autoscaler")
        pairs[key.strip()] = value.strip()
    return pairs


def reconciler_operator(
    sink: RouteSink | None = None, gateway: Gateway | None = None, defaults: Defaults | None = None
) -> Operator:
    """The InferenceService reconciler, autoscaled on the gateway's load when there is one;
    ``MARSERVE_CRASH_BACKOFF_S``: CrashLoopBackOff's base, ``MARSERVE_LIVENESS_S``: how long a
    started replica may stay unhealthy before it is killed."""
    from marserve.controlplane import autoscaling
    from marserve.controlplane.operator import operator
    from marserve.controlplane.replicas import LIVENESS_S, Backoff

    base = float(os.environ.get("MARSERVE_CRASH_BACKOFF_S") or 10.0)
    liveness = float(os.environ.get("MARSERVE_LIVENESS_S") or LIVENESS_S)
    if gateway is None:
        return operator(sink, backoff=Backoff(base=base), liveness_s=liveness)
    return autoscaling.operator(sink, gateway.stats, defaults=defaults,
                                registry=gateway.metrics.registry,
                                backoff=Backoff(base=base), liveness_s=liveness)  # fmt: skip


@click.command()
@click.option("--home", type=click.Path(path_type=Path), default=None)
def kubeconfig(home: Path | None) -> None:
    """Print the kubeconfig the running controller wrote."""
    path = (home or marserve_home()) / "kubeconfig"
    if not path.exists():
        raise click.ClickException(f"no kubeconfig at {path}: start `marserve controller` first")
    click.echo(path.read_text(), nl=False)
