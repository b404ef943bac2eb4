"""``marserve controller`` and ``marserve kubeconfig``: thin commands over the control plane."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from marserve.controlplane.controller import Operator
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
    "--home", type=click.Path(path_type=Path), default=None, help="Default: $MARSERVE_HOME."
)
def controller(
    port: int, gateway_port: int, gateway_token: str | None, domain: str, home: Path | None
) -> None:
    """Run the local KServe controller (Kubernetes API on 127.0.0.1) in the foreground.

    The gateway (Host-header ingress for every InferenceService, HTTP/1.1 and h2c) listens on
    127.0.0.1:GATEWAY_PORT; the reconciler runs each service's replicas behind it.
    """
    from marserve.controlplane.config import ControllerConfig
    from marserve.controlplane.controller import run_controller
    from marserve.controlplane.gateway import Gateway, operator, settings_for

    config = ControllerConfig(
        home=home or marserve_home(),
        port=port,
        gateway_port=gateway_port,
        domain=domain,
        gateway_token=gateway_token,
    )
    gateway = Gateway(settings_for(config))
    asyncio.run(run_controller(config, [operator(gateway), reconciler_operator(gateway)]))


def reconciler_operator(sink: RouteSink | None = None) -> Operator:
    """The InferenceService reconciler; ``MARSERVE_CRASH_BACKOFF_S``: CrashLoopBackOff's base,
    ``MARSERVE_LIVENESS_S``: how long a started replica may stay unhealthy before it is killed."""
    from marserve.controlplane.operator import operator
    from marserve.controlplane.replicas import LIVENESS_S, Backoff

    base = float(os.environ.get("MARSERVE_CRASH_BACKOFF_S") or 10.0)
    liveness = float(os.environ.get("MARSERVE_LIVENESS_S") or LIVENESS_S)
    return operator(sink, backoff=Backoff(base=base), liveness_s=liveness)


@click.command()
@click.option("--home", type=click.Path(path_type=Path), default=None)
def kubeconfig(home: Path | None) -> None:
    """Print the kubeconfig the running controller wrote."""
    path = (home or marserve_home()) / "kubeconfig"
    if not path.exists():
        raise click.ClickException(f"no kubeconfig at {path}: start `marserve controller` first")
    click.echo(path.read_text(), nl=False)
