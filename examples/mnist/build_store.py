"""Builds the MNIST example's model store: DIR/config/config.properties + DIR/model-store/mnist.mar.

    python examples/mnist/build_store.py --out examples/mnist/model_store [--force]

The archive is made by ``python -m marserve archive`` (torch-model-archiver's flags), or by any
archiver with the same flags given as ``--archiver`` (e.g. ``torch-model-archiver``). Outputs
newer than their inputs are left alone, so running it again is cheap.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from marserve.archive.store import (
    DEFAULT_ARCHIVER,
    cached_build,
    parse_store_args,
    report_failure,
    report_store,
    run_archiver,
    store_archive,
    store_config,
)

HERE = Path(__file__).resolve().parent
MODEL_NAME = "mnist"
MODEL_VERSION = "1.0"
MODEL_FILE = HERE / "mnist.py"
SERIALIZED_FILE = HERE / "mnist_cnn.pt"
HANDLER = HERE / "mnist_handler.py"
CONFIG = HERE / "config.properties"


def archive_command(archiver: Sequence[str], export_path: Path) -> list[str]:
    """The archiver invocation that writes ``export_path/mnist.mar``."""
    return [
        *archiver,
        "--model-name", MODEL_NAME,
        "--version", MODEL_VERSION,
        "--model-file", str(MODEL_FILE),
        "--serialized-file", str(SERIALIZED_FILE),
        "--handler", str(HANDLER),
        "--export-path", str(export_path),
        "-f",
    ]  # fmt: skip


def is_fresh(output: Path, inputs: Sequence[Path]) -> bool:
    """Whether ``output`` exists and is at least as new as every input."""
    if not output.is_file():
        return False
    newest_input = max(p.stat().st_mtime_ns for p in inputs)
    return output.stat().st_mtime_ns >= newest_input


def build_archive(mar: Path, archiver: Sequence[str]) -> None:
    """Run the archiver into a scratch folder and move the result into place atomically."""

    def build(scratch: Path) -> Path:
        return run_archiver(archive_command(archiver, scratch), scratch, MODEL_NAME)

    cached_build(mar, True, build)


def build_store(out: Path, force: bool = False, archiver: Sequence[str] | None = None) -> bool:
    """Create or refresh the store under ``out``; returns whether anything was rebuilt."""
    config = store_config(out)
    mar = store_archive(out, MODEL_NAME)
    script = Path(__file__).resolve()
    rebuilt = False
    if force or not is_fresh(config, [CONFIG, script]):
        config.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CONFIG, config)
        rebuilt = True
    if force or not is_fresh(mar, [MODEL_FILE, SERIALIZED_FILE, HANDLER, script]):
        build_archive(mar, archiver or DEFAULT_ARCHIVER)
        rebuilt = True
    return rebuilt


def main(argv: Sequence[str] | None = None) -> int:
    out, force, archiver = parse_store_args(
        argv,
        __doc__.splitlines()[0],
        force_help="rebuild even if up to date",
        archiver_help="archiver command with torch-model-archiver's flags "
        "(default: python -m marserve archive)",
    )
    try:
        rebuilt = build_store(out, force=force, archiver=archiver)
    except (RuntimeError, OSError) as exc:
        return report_failure(exc)
    state = "built" if rebuilt else "up to date"
    report_store(f"MNIST model store {state}", out, store_archive(out, MODEL_NAME))
    return 0


if __name__ == "__main__":
    sys.exit(main())
