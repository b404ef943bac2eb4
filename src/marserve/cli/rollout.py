"""``marserve rollout promote|rollback NAME``: the canary applies KServe documents, as one patch."""

from __future__ import annotations

from typing import Any

import click

from marserve.cli.kube import _client

ISVCS = "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices/{name}"
MERGE = {"Content-Type": "application/merge-patch+json"}


def _patch(name: str, namespace: str | None, percent: int | None) -> None:
    with _client() as client:
        path = ISVCS.format(ns=namespace or client.namespace, name=name)
        body: dict[str, Any] = {"spec": {"predictor": {"canaryTrafficPercent": percent}}}
        client.request("PATCH", path, json=body, headers=MERGE)
    click.echo(f"inferenceservice.serving.kserve.io/{name} patched")


@click.group()
def rollout() -> None:
    """Move an InferenceService's canary: promote it to 100 %, or roll back to the previous."""


@rollout.command()
@click.argument("name")
@click.option("-n", "--namespace", default=None)
def promote(name: str, namespace: str | None) -> None:
    """Remove canaryTrafficPercent: the latest ready revision takes all traffic."""
    _patch(name, namespace, None)


@rollout.command()
@click.argument("name")
@click.option("-n", "--namespace", default=None)
def rollback(name: str, namespace: str | None) -> None:
    """canaryTrafficPercent: 0: all traffic to the previous rolled-out revision."""
    _patch(name, namespace, 0)
