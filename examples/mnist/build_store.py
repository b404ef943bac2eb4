"""Builds the MNIST example's model store: DIR/config/config.properties + DIR/model-store/mnist.mar.

    python examples/mnist/build_store.py --out examples/mnist/model_store [--force]

The archive is made by ``python -m marserve archive`` (torch-model-archiver's flags), or by any
archiver with the same flags given as ``--archiver`` (e.g. ``torch-model-archiver``). Outputs
newer than their inputs are left alone, so running it again is cheap.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL_NAME = "mnist"
MODEL_VERSION = "1.0"
MODEL_FILE = HERE / "mnist.py"
SERIALIZED_FILE = HERE / "mnist_cnn.pt"
HANDLER = HERE / "mnist_handler.py"
CONFIG = HERE / "config.properties"
DEFAULT_ARCHIVER = (sys.executable, "-m", "marserve", "archive")


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


def resolve_archiver(command: str | None) -> list[str]:
    """``--archiver`` as an argv list; a bare name is also looked up beside this Python."""
    if command is None:
        return list(DEFAULT_ARCHIVER)
    argv = shlex.split(command)
    if argv and shutil.which(argv[0]) is None:
        beside_python = Path(sys.executable).parent / argv[0]
        if beside_python.is_file():
            argv[0] = str(beside_python)
    return argv


def build_archive(mar: Path, archiver: Sequence[str]) -> None:
    """Run the archiver into a scratch folder and move the result into place atomically."""
    mar.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=mar.parent, prefix=".build-") as scratch:
        result = subprocess.run(
            archive_command(archiver, Path(scratch)), capture_output=True, text=True, check=False
        )
        built = Path(scratch) / f"{MODEL_NAME}.mar"
        if result.returncode != 0 or not built.is_file():
            detail = (result.stderr or result.stdout).strip()
            raise RuntimeError(f"archiver failed (exit {result.returncode}): {detail}")
        os.replace(built, mar)


def build_store(out: Path, force: bool = False, archiver: Sequence[str] | None = None) -> bool:
    """Create or refresh the store under ``out``; returns whether anything was rebuilt."""
    config = out / "config" / "config.properties"
    mar = out / "model-store" / f"{MODEL_NAME}.mar"
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model store folder to create")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument(
        "--archiver",
        help="archiver command with torch-model-archiver's flags "
        "(default: python -m marserve archive)",
    )
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    try:
        rebuilt = build_store(out, force=args.force, archiver=resolve_archiver(args.archiver))
    except (RuntimeError, OSError) as exc:
        print(f"build_store: {exc}", file=sys.stderr)
        return 1
    state = "built" if rebuilt else "up to date"
    print(f"MNIST model store {state}: {out}")
    print(f"  config:      {out / 'config' / 'config.properties'}")
    print(f"  model-store: {out / 'model-store' / (MODEL_NAME + '.mar')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
