"""Builds the text classifier example: DIR/config/config.properties + DIR/model-store/my_tc.mar.

    python examples/text_classifier/build_store.py --out examples/text_classifier/model_store

The model is trained by ``train.py`` (about 15 s) and archived with ``python -m marserve archive``
(torch-model-archiver's flags; ``--archiver`` picks another) with the built-in
``text_classifier`` handler. The trained archive is cached under
``~/.cache/marserve/text-classifier/`` keyed by the data, the training code and the tokenizer
(and the archive beside it, keyed by the archiver), so only the first build pays for training;
``--force`` retrains.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL_NAME = "my_tc"
MODEL_VERSION = "1.0"
CONFIG = HERE / "config.properties"
DEFAULT_ARCHIVER = (sys.executable, "-m", "marserve", "archive")


def cache_root() -> Path:
    """Where heavy build steps are kept: ``$MARSERVE_CACHE``, else ``~/.cache/marserve``."""
    return Path(os.environ.get("MARSERVE_CACHE") or Path.home() / ".cache" / "marserve")


def training_key() -> str:
    """A digest of the articles, the training code and the tokenizer."""
    sys.path.insert(0, str(HERE))
    import train

    from marserve.handlers import text

    digest = hashlib.sha256()
    sources = [HERE / "train.py", HERE / "model.py", Path(text.__file__)]
    articles = sorted(train.data_dir().rglob("*.txt"))
    for path in [*sources, *articles]:
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:24]


def archiver_key(archiver: Sequence[str]) -> str:
    """A digest of the archiver command and of this script (which names the archive's files)."""
    digest = hashlib.sha256(" ".join(archiver).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def archive_command(archiver: Sequence[str], trained: Path, export_path: Path) -> list[str]:
    extras = [str(trained / "source_vocab.json"), str(trained / "index_to_name.json")]
    return [
        *archiver,
        "--model-name", MODEL_NAME,
        "--version", MODEL_VERSION,
        "--model-file", str(HERE / "model.py"),
        "--serialized-file", str(trained / "model.pt"),
        "--handler", "text_classifier",
        "--extra-files", ",".join(extras),
        "--export-path", str(export_path),
        "-f",
    ]  # fmt: skip


def run_step(command: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-2000:]
        step = Path(command[1]).name
        raise RuntimeError(f"{step} failed ({result.returncode}): {detail}")


def trained_model(folder: Path, force: bool) -> Path:
    """``folder/trained`` (model.pt, source_vocab.json, index_to_name.json), trained once."""
    trained = folder / "trained"
    if (trained / "model.pt").is_file() and not force:
        return trained
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".train-") as scratch:
        run_step([sys.executable, str(HERE / "train.py"), "--out", str(Path(scratch) / "out")])
        if trained.exists():
            shutil.rmtree(trained)
        os.replace(Path(scratch) / "out", trained)
    prune(folder.parent, folder)
    return trained


def cached_archive(archiver: Sequence[str], force: bool) -> Path:
    """The archive for the current inputs: trained and packed once, then reused."""
    folder = cache_root() / "text-classifier" / training_key()
    trained = trained_model(folder, force)
    cached = folder / archiver_key(archiver) / f"{MODEL_NAME}.mar"
    if cached.is_file() and not force:
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent, prefix=".build-") as scratch:
        run_step(archive_command(archiver, trained, Path(scratch)))
        os.replace(Path(scratch) / f"{MODEL_NAME}.mar", cached)
    return cached


def prune(parent: Path, keep: Path, entries: int = 3) -> None:
    """Drop all but the ``entries`` newest cached builds, so edits do not fill the disk."""
    others = [p for p in parent.iterdir() if p.is_dir() and p != keep]
    others = [p for p in others if not p.name.startswith(".")]  # builds in progress stay
    others.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in others[entries - 1 :]:
        shutil.rmtree(stale, ignore_errors=True)


def resolve_archiver(command: str | None) -> list[str]:
    """``--archiver`` as an argv list; a bare name is also looked up beside this Python."""
    if command is None:
        return list(DEFAULT_ARCHIVER)
    argv = shlex.split(command)
    if argv and shutil.which(argv[0]) is None and (Path(sys.executable).parent / argv[0]).is_file():
        argv[0] = str(Path(sys.executable).parent / argv[0])
    return argv


def place(source: Path, target: Path) -> None:
    """Put ``source`` at ``target`` atomically (a hard link when the file system allows)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        os.link(source, scratch)
    except OSError:
        shutil.copyfile(source, scratch)
    os.replace(scratch, target)


def build_store(out: Path, force: bool = False, archiver: Sequence[str] | None = None) -> Path:
    """Create or refresh the store under ``out``; returns the archive's path."""
    place(CONFIG, out / "config" / "config.properties")
    mar = out / "model-store" / f"{MODEL_NAME}.mar"
    place(cached_archive(archiver or DEFAULT_ARCHIVER, force), mar)
    return mar


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model store folder to create")
    parser.add_argument("--force", action="store_true", help="retrain and rebuild the archive")
    parser.add_argument("--archiver", help="archiver command with torch-model-archiver's flags")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    try:
        mar = build_store(out, force=args.force, archiver=resolve_archiver(args.archiver))
    except (RuntimeError, OSError, ImportError) as exc:
        print(f"build_store: {exc}", file=sys.stderr)
        return 1
    print(f"Text classifier model store: {out}")
    print(f"  config:      {out / 'config' / 'config.properties'}")
    print(f"  model-store: {mar}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
