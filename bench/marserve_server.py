"""marserve under test: ``marserve serve --foreground`` from the project venv, defaults only."""

from __future__ import annotations

from pathlib import Path

from bench.servers import ManagedServer, Ports


class Marserve(ManagedServer):
    """One foreground ``marserve serve`` process and its worker children."""

    name = "marserve"

    def __init__(self, run_dir: Path, ports: Ports, executable: Path, store: Path, archive: Path):
        super().__init__(run_dir, ports)
        self.executable = executable
        self.store = store
        self.archive = archive
        self.config = run_dir / "config.properties"

    def command(self) -> list[str]:
        model = self.archive.stem
        return [
            str(self.executable),
            "serve",
            "--foreground",
            "--ncs",
            "--model-store",
            str(self.store),
            "--models",
            f"{model}={self.archive.name}",
            "--ts-config",
            str(self.config),
            "--pid-file",  # keeps our instance apart from any other marserve on the machine
            str(self.run_dir / "marserve.pid"),
        ]
