"""``marserve serve`` and ``marserve stop``, with TorchServe's flag names."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from marserve.errors import ConfigError
from marserve.observability.access_log import AccessLog, configure_logging

if TYPE_CHECKING:
    from marserve.settings import ServerSettings

DEFAULT_PID_FILE = Path(tempfile.gettempdir()) / ".marserve.pid"


def _split_models(values: tuple[str, ...]) -> tuple[str, ...]:
    """``--models a=a.mar b=b.mar`` / ``--models a=a.mar,b.mar`` / repeated flags."""
    return tuple(part for value in values for part in value.replace(",", " ").split() if part)


def _cli_overrides(options: dict[str, Any]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if options["model_store"] is not None:
        overrides["model_store"] = str(options["model_store"])
    if options["models"]:
        overrides["models"] = ",".join(_split_models(options["models"]))
    for flag in ("ncs", "disable_token_auth", "enable_model_api"):
        if options[flag]:
            overrides[flag] = True
    return overrides


def _daemonize(argv: list[str], pid_file: Path, log_file: Path) -> None:
    """Start ``marserve serve --foreground`` detached, as ``torchserve --start`` does."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "marserve", "serve", "--foreground", *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    click.echo(f"marserve started in the background (pid {process.pid}); logs: {log_file}")


@click.command(context_settings={"ignore_unknown_options": False})
@click.option("--model-store", type=click.Path(path_type=Path), help="Folder of .mar archives.")
@click.option(
    "--ts-config",
    "ts_config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TorchServe config.properties.",
)
@click.option(
    "--models",
    multiple=True,
    help="Models to load: NAME=FILE.mar, FILE.mar or 'all' (repeat or separate by spaces).",
)
@click.option("--start", is_flag=True, help="Start the server (the default action).")
@click.option("--foreground", is_flag=True, help="Stay in the foreground instead of detaching.")
@click.option(
    "--ncs",
    "--no-config-snapshots",
    "ncs",
    is_flag=True,
    help="Do not write config snapshots (marserve never does; accepted for TorchServe).",
)
@click.option("--disable-token-auth", is_flag=True, help="Turn token authorization off.")
@click.option("--enable-model-api", is_flag=True, help="Allow model register/unregister.")
@click.option(
    "--port-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the bound URLs and pid as JSON here once serving (useful with port 0).",
)
@click.option(
    "--pid-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_PID_FILE,
    show_default=True,
    help="Where `marserve stop` looks.",
)
@click.option(
    "--key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where token authorization writes its keys (default: ./key_file.json).",
)
@click.option(
    "--log-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("logs/marserve.log"),
    show_default=True,
    help="Log file when detached.",
)
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    help="json: every log line (server and access) as one JSON object on stdout.",
)
@click.option(
    "--access-log",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "all", "off"]),
    help="Access lines on stdout: auto writes at most 10 a second, all one per request.",
)
@click.option("--storage-uri", help="Pull this storageUri first and serve it as /mnt/models.")
@click.option("--pvc", multiple=True, help="With --storage-uri pvc://: CLAIM=DIR (repeatable).")
@click.option(
    "--storage-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where --storage-uri is pulled to (default: a fresh temporary folder).",
)
def serve(**options: Any) -> None:
    """Serve a model store over TorchServe's and KServe's APIs (torchserve --start)."""
    if not options["foreground"]:
        argv = [a for a in sys.argv[2:] if a != "--start"]
        _daemonize(argv, options["pid_file"], options["log_file"])
        return
    configure_logging(options["log_level"], options["log_format"])
    if options["storage_uri"]:
        _use_storage(options)
    pid_file: Path = options["pid_file"]
    pid_file.write_text(str(os.getpid()))
    try:
        _run(_serve(options))
    except OSError as exc:  # a port in use, an unwritable key file...
        raise click.ClickException(f"cannot serve: {exc}") from exc
    finally:
        if pid_file.exists() and pid_file.read_text().strip() == str(os.getpid()):
            pid_file.unlink()


def _use_storage(options: dict[str, Any]) -> None:
    """Pull --storage-uri and point the model store and config at it, as KServe's runtime
    finds /mnt/models: ``model-store/`` and ``config/config.properties``."""
    from marserve.cli.storage import pull_model, settings_for

    dest = options["storage_dir"] or Path(tempfile.mkdtemp(prefix="marserve-models-")) / "models"
    folder = pull_model(options["storage_uri"], dest, settings_for(options["pvc"], None, None))
    if options["model_store"] is None:
        options["model_store"] = folder / "model-store"
    config = folder / "config" / "config.properties"
    if options["ts_config"] is None and config.is_file():
        options["ts_config"] = config


def _settings(options: dict[str, Any]) -> ServerSettings:
    from marserve.settings import load_settings

    try:
        return load_settings(options["ts_config"], env=os.environ, cli=_cli_overrides(options))
    except (ConfigError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


def _startup_models(settings: ServerSettings) -> int:
    """How many models start-up loads: one worker each is started before the front (a pool
    starts its other workers once its first has loaded)."""
    entries = [e for e in settings.load_models if e != "all"]
    if "all" in settings.load_models and settings.model_store is not None:
        entries += [p.name for p in settings.model_store.glob("*.mar")]
    return min(len(settings.models) + len(entries), 4 * (os.cpu_count() or 1))


async def _serve(options: dict[str, Any]) -> None:
    """Pre-start a worker first thing (its ``import torch`` is most of a cold start and now
    overlaps with everything below), then read the settings and build the server."""
    from marserve.workers.pool import WarmProcesses

    warm = WarmProcesses()
    await warm.start(1)
    try:
        settings = _settings(options)
        await warm.start(_startup_models(settings) - 1)
        from marserve.server import run_server

        await run_server(
            settings,
            env=os.environ,
            port_file=options["port_file"],
            key_file=options["key_file"],
            access_log=AccessLog(options["access_log"]),
            warm=warm,
        )
    finally:
        await warm.close()


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a core dependency on Linux/macOS
        asyncio.run(main)
    else:
        uvloop.run(main)


@click.command()
@click.option(
    "--pid-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_PID_FILE,
    show_default=True,
)
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for the server to drain and exit.",
)
def stop(pid_file: Path, timeout: float) -> None:
    """Stop a running marserve (torchserve --stop): drain, then exit."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        raise click.ClickException("marserve is not running (no pid file)") from None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        raise click.ClickException("marserve is not running (stale pid file removed)") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            click.echo("marserve stopped")
            return
        time.sleep(0.1)
    raise click.ClickException(f"marserve (pid {pid}) did not exit within {timeout:g}s")
