"""The root ``marserve`` command group; each subcommand lives in its own module."""

from __future__ import annotations

import click

from marserve import __version__
from marserve.cli.archive import archive
from marserve.cli.explain import explain
from marserve.cli.serve import serve, stop


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="marserve")
def cli() -> None:
    """marserve: serve TorchServe .mar archives over TorchServe and KServe APIs."""


cli.add_command(archive)
cli.add_command(explain)
cli.add_command(serve)
cli.add_command(stop)


def main() -> None:
    cli()
