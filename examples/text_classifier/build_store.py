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

import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from marserve.archive.store import (
    DEFAULT_ARCHIVER,
    cache_root,
    cached_build,
    content_key,
    place_store,
    prune,
    run_archiver,
    run_tool,
    store_main,
)

HERE = Path(__file__).resolve().parent
MODEL_NAME = "my_tc"
MODEL_VERSION = "1.0"
CONFIG = HERE / "config.properties"


def training_key() -> str:
    """A digest of the articles, the training code and the tokenizer."""
    sys.path.insert(0, str(HERE))
    import train

    from marserve.handlers import text

    sources = [HERE / "train.py", HERE / "model.py", Path(text.__file__)]
    return content_key([*sources, *sorted(train.data_dir().rglob("*.txt"))])


def archiver_key(archiver: Sequence[str]) -> str:
    """A digest of the archiver command and of this script (which names the archive's files)."""
    return content_key([Path(__file__).resolve()], seed=" ".join(archiver), length=16)


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


def step_env() -> dict[str, str]:
    """The environment for training and archiving: one thread, as the examples assume."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def trained_model(folder: Path, force: bool) -> Path:
    """``folder/trained`` (model.pt, source_vocab.json, index_to_name.json), trained once."""
    trained = folder / "trained"
    if (trained / "model.pt").is_file() and not force:
        return trained
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".train-") as scratch:
        command = [sys.executable, str(HERE / "train.py"), "--out", str(Path(scratch) / "out")]
        run_tool(command, "train.py", step_env())
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

    def build(scratch: Path) -> Path:
        command = archive_command(archiver, trained, scratch)
        return run_archiver(command, scratch, MODEL_NAME, step_env())

    cached_build(cached, force, build)
    return cached


def build_store(out: Path, force: bool = False, archiver: Sequence[str] | None = None) -> Path:
    """Create or refresh the store under ``out``; returns the archive's path."""
    archive = cached_archive(archiver or DEFAULT_ARCHIVER, force)
    return place_store(out, CONFIG, archive, MODEL_NAME)


def main(argv: Sequence[str] | None = None) -> int:
    description = __doc__.splitlines()[0]
    return store_main(
        argv,
        description,
        "Text classifier model store",
        build_store,
        "retrain and rebuild the archive",
    )


if __name__ == "__main__":
    sys.exit(main())
