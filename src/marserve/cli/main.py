"""The root ``marserve`` command group; each subcommand lives in its own module.

Subcommands are imported only when run, so ``marserve serve`` starts without loading the
archiver's or the explain client's dependencies.
"""

from __future__ import annotations

import importlib

import click

from marserve import __version__

COMMANDS = {
    "archive": "marserve.cli.archive:archive",
    "container": "marserve.cli.container:container",
    "controller": "marserve.cli.controller:controller",
    "convert": "marserve.cli.convert:convert",
    "explain": "marserve.cli.explain:explain",
    "export": "marserve.cli.export:export",
    "kubeconfig": "marserve.cli.controller:kubeconfig",
    "serve": "marserve.cli.serve:serve",
    "stop": "marserve.cli.serve:stop",
    "storage": "marserve.cli.storage:storage",
    "apply": "marserve.cli.kube:apply",
    "get": "marserve.cli.kube:get",
    "describe": "marserve.cli.kube:describe",
    "delete": "marserve.cli.kube:delete",
    "logs": "marserve.cli.kube:logs",
    "rollout": "marserve.cli.rollout:rollout",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, name = target.partition(":")
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="marserve")
def cli() -> None:
    """marserve: serve TorchServe .mar archives over TorchServe and KServe APIs."""


def main() -> None:
    cli()
