"""Builds KServe-layout model stores (config/config.properties + model-store/NAME.mar), cached."""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

DEFAULT_ARCHIVER = (sys.executable, "-m", "marserve", "archive")
DETAIL_CHARS = 2000


def cache_root() -> Path:
    """Where heavy build steps are kept: ``$MARSERVE_CACHE``, else ``~/.cache/marserve``."""
    return Path(os.environ.get("MARSERVE_CACHE") or Path.home() / ".cache" / "marserve")


def content_key(paths: Iterable[Path], seed: str = "", length: int = 24) -> str:
    """A digest of ``seed`` and each file's name and content, ``length`` hex digits long."""
    digest = hashlib.sha256(seed.encode())
    for path in paths:
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:length]


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


def run_tool(command: Sequence[str], what: str, env: Mapping[str, str] | None = None) -> None:
    """Run one build step; a failure is a ``RuntimeError`` naming it, its exit and its output."""
    result = subprocess.run(list(command), capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-DETAIL_CHARS:]
        raise RuntimeError(f"{what} failed (exit {result.returncode}): {detail}")


def run_archiver(
    command: Sequence[str], export: Path, name: str, env: Mapping[str, str] | None = None
) -> Path:
    """Run an archiver whose ``--export-path`` is ``export``; returns the ``NAME.mar`` it wrote."""
    run_tool(command, "archiver", env)
    built = export / f"{name}.mar"
    if not built.is_file():
        raise RuntimeError(f"archiver failed (exit 0): it wrote no {built.name}")
    return built


def cached_build(cached: Path, force: bool, build: Callable[[Path], Path]) -> bool:
    """Make ``cached`` with ``build(scratch)`` (unless present); returns whether it was built.

    ``build`` gets a fresh scratch folder beside ``cached`` and returns the file it made there,
    which is then moved into place atomically, so a failed or interrupted build leaves nothing.
    """
    if cached.is_file() and not force:
        return False
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent, prefix=".build-") as scratch:
        os.replace(build(Path(scratch)), cached)
    return True


def prune(parent: Path, keep: Path, entries: int = 3) -> None:
    """Drop all but the ``entries`` newest cached builds, so edits do not fill the disk."""
    others = [p for p in parent.iterdir() if p.is_dir() and p != keep]
    others = [p for p in others if not p.name.startswith(".")]  # builds in progress stay
    others.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in others[entries - 1 :]:
        shutil.rmtree(stale, ignore_errors=True)


def place(source: Path, target: Path) -> None:
    """Put ``source`` at ``target`` atomically (a hard link when the file system allows)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        os.link(source, scratch)
    except OSError:
        shutil.copyfile(source, scratch)
    os.replace(scratch, target)


def store_config(out: Path) -> Path:
    """The store's ``config/config.properties``."""
    return out / "config" / "config.properties"


def store_archive(out: Path, name: str) -> Path:
    """The store's ``model-store/NAME.mar``."""
    return out / "model-store" / f"{name}.mar"


def place_store(out: Path, config: Path, archive: Path, name: str) -> Path:
    """Put ``config`` and ``archive`` into the store under ``out``; returns the archive's path."""
    place(config, store_config(out))
    mar = store_archive(out, name)
    place(archive, mar)
    return mar


def parse_store_args(
    argv: Sequence[str] | None, description: str, force_help: str, archiver_help: str
) -> tuple[Path, bool, list[str]]:
    """A store builder's command line: ``--out DIR [--force] [--archiver CMD]``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help="model store folder to create")
    parser.add_argument("--force", action="store_true", help=force_help)
    parser.add_argument("--archiver", help=archiver_help)
    args = parser.parse_args(argv)
    return args.out.resolve(), bool(args.force), resolve_archiver(args.archiver)


def report_store(title: str, out: Path, mar: Path) -> None:
    """What a store builder prints once the store is in place."""
    print(f"{title}: {out}")
    print(f"  config:      {store_config(out)}")
    print(f"  model-store: {mar}")


def report_failure(exc: BaseException) -> int:
    """What a store builder prints when a step failed; returns its exit status."""
    print(f"build_store: {exc}", file=sys.stderr)
    return 1


def store_main(
    argv: Sequence[str] | None,
    description: str,
    title: str,
    build: Callable[[Path, bool, list[str]], Path],
    force_help: str,
) -> int:
    """A cached store builder's ``main``: parse, ``build(out, force, archiver)``, report."""
    archiver_help = "archiver command with torch-model-archiver's flags"
    out, force, archiver = parse_store_args(argv, description, force_help, archiver_help)
    try:
        mar = build(out, force, archiver)
    except (RuntimeError, OSError, ImportError) as exc:
        return report_failure(exc)
    report_store(title, out, mar)
    return 0
