"""The real TorchServe 0.12: its private virtualenv, the shared .mar build, start and stop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench import procs
from bench.servers import ManagedServer, Ports, clean_env

TS_VERSION = "0.12.0"
# torch pinned to the version whose CPU wheel the machine already holds; pyyaml because
# TorchServe's Python worker imports it without declaring it; numpy and pillow because the
# example handler preprocesses with them.
TS_PACKAGES = (
    f"torchserve=={TS_VERSION}",
    f"torch-model-archiver=={TS_VERSION}",
    "torch==2.13.0",
    "pyyaml",
    "numpy",
    "pillow",
)
_STAMP = ".bench-installed"
TS_MAIN_CLASS = "org.pytorch.serve.ModelServer"


class SetupError(RuntimeError):
    """The TorchServe environment or the archive could not be prepared."""


def _run(cmd: list[str], timeout_s: float, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout_s, cwd=cwd, check=False
    )
    if proc.returncode != 0:
        raise SetupError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout


def ensure_venv(venv: Path) -> Path:
    """Create ``venv`` with TorchServe 0.12 once (a stamp records the package set); return bin/."""
    bindir = venv / "bin"
    stamp = venv / _STAMP
    wanted = "\n".join(TS_PACKAGES)
    if stamp.is_file() and stamp.read_text() == wanted and (bindir / "torchserve").is_file():
        return bindir
    if not (bindir / "python").is_file():
        _run([sys.executable, "-m", "venv", str(venv)], timeout_s=300)
    _run([str(bindir / "python"), "-m", "pip", "install", "-q", *TS_PACKAGES], timeout_s=1800)
    stamp.write_text(wanted)
    return bindir


def build_archive(bindir: Path, example_dir: Path, store: Path, model: str) -> Path:
    """Build ``<model>.mar`` from the example with TorchServe's own torch-model-archiver."""
    store.mkdir(parents=True, exist_ok=True)
    _run(
        [
            str(bindir / "torch-model-archiver"),
            "--model-name",
            model,
            "--version",
            "1.0",
            "--model-file",
            str(example_dir / "mnist.py"),
            "--serialized-file",
            str(example_dir / "mnist_cnn.pt"),
            "--handler",
            str(example_dir / "mnist_handler.py"),
            "--export-path",
            str(store),
            "--force",
        ],
        timeout_s=300,
    )
    archive = store / f"{model}.mar"
    if not archive.is_file():
        raise SetupError(f"torch-model-archiver wrote no {archive}")
    return archive


class TorchServe(ManagedServer):
    """``torchserve --start`` (background Java frontend + Python workers) in a private temp dir.

    TMPDIR/TEMP point into the run directory so the pid file and worker sockets cannot clash
    with any other TorchServe on the machine, and ``torchserve --stop`` finds exactly ours.
    """

    def __init__(
        self,
        name: str,
        run_dir: Path,
        ports: Ports,
        bindir: Path,
        store: Path,
        archive: Path,
        extra_env: dict[str, str] | None = None,
        log_config: Path | None = None,
    ) -> None:
        super().__init__(run_dir, ports)
        self.name = name
        self.bindir = bindir
        self.store = store
        self.archive = archive
        self.extra_env = dict(extra_env or {})
        self.log_config = log_config
        self.config = run_dir / "config.properties"
        self.tmp = run_dir / "tmp"

    def env(self) -> dict[str, str]:
        tmp = str(self.tmp)
        paths = {"TMPDIR": tmp, "TEMP": tmp, "LOG_LOCATION": str(self.run_dir / "logs")}
        paths["METRICS_LOCATION"] = paths["LOG_LOCATION"]
        env = clean_env({**paths, **self.extra_env})
        env["PATH"] = f"{self.bindir}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def command(self) -> list[str]:
        model = self.archive.stem
        return [
            str(self.bindir / "torchserve"),
            "--start",
            "--ncs",
            "--model-store",
            str(self.store),
            "--models",
            f"{model}={self.archive.name}",
            "--ts-config",
            str(self.config),
            "--disable-token-auth",
            *(["--log-config", str(self.log_config)] if self.log_config else []),
        ]

    def start(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        super().start()

    def root_pid(self) -> int | None:
        """The Java frontend's pid, from TorchServe's pid file."""
        try:
            return int((self.tmp / ".model_server.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def early_exit(self) -> str | None:
        if self.popen is None:
            return None
        code = self.popen.poll()
        if code is None:
            return None  # the launcher is still starting Java
        if code != 0:
            return f"launcher exited with status {code}"
        root = self.root_pid()
        if root is None:
            return "launcher wrote no pid file"
        _, count = self.snapshot()
        return None if count else "Java frontend exited"

    def graceful_stop(self) -> None:
        """``torchserve --stop`` with the same private temp dir, then wait for the launcher."""
        if self.root_pid() is None:
            return
        subprocess.run(
            [str(self.bindir / "torchserve"), "--stop"],
            cwd=self.run_dir,
            env=self.env(),
            capture_output=True,
            timeout=60,
            check=False,
        )

    def stop_leftover(self) -> None:
        """Stop a TorchServe a killed earlier run left behind in this run directory, if any."""
        root = self.root_pid()
        if root is None or TS_MAIN_CLASS not in procs.cmdline(root):
            return  # no pid file, or the pid now belongs to something else
        self.snapshot()
        self.graceful_stop()
        procs.kill_all(procs.wait_gone(self.seen, timeout_s=30))


# TorchServe's performance guide: no access log, warnings only (its default logs every request).
QUIET_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="%d{ISO8601} [%-5p] %t %c - %m%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="off" additivity="false"/>
    <Logger name="MODEL_LOG" level="warn" additivity="false"><AppenderRef ref="STDOUT"/></Logger>
    <Logger name="MODEL_METRICS" level="off" additivity="false"/>
    <Logger name="TS_METRICS" level="off" additivity="false"/>
    <Logger name="org.pytorch" level="warn" additivity="false"><AppenderRef ref="STDOUT"/></Logger>
    <Root level="warn"><AppenderRef ref="STDOUT"/></Root>
  </Loggers>
</Configuration>
"""


def quiet_log_config(run_dir: Path) -> Path:
    """Write the quiet log4j2 config into ``run_dir`` and return its path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "log4j2-quiet.xml"
    path.write_text(QUIET_LOG4J2)
    return path
