"""Helpers for the archive tests: tiny model inputs, torch-model-archiver runs, hostile archives."""

from __future__ import annotations

import functools
import io
import os
import shutil
import subprocess
import sys
import tarfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import orjson

MODEL_PY = """\
import torch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)
"""

HANDLER_PY = """\
from ts.torch_handler.base_handler import BaseHandler


class TinyHandler(BaseHandler):
    pass


def handle(data, context):
    return [0 for _ in data]
"""


@functools.lru_cache(maxsize=1)
def weights_bytes() -> bytes:
    """A real state_dict saved with torch.save (tiny Linear layer)."""
    import torch

    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(4, 2).state_dict(), buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class Inputs:
    """Files to archive, all inside ``root`` (tests run the archivers with cwd=root)."""

    root: Path
    model_file: str = "model.py"
    serialized_file: str = "tiny.pt"
    handler: str = "tiny_handler.py"
    requirements_file: str = "requirements.txt"
    config_file: str = "model-config.yaml"
    extra_dir: str = "extra"
    extra_file: str = "index_to_name.json"


def make_inputs(root: Path) -> Inputs:
    """Write a small model, weights, handler, requirements, config and an extra folder."""
    root.mkdir(parents=True, exist_ok=True)
    inputs = Inputs(root)
    (root / inputs.model_file).write_text(MODEL_PY)
    (root / inputs.serialized_file).write_bytes(weights_bytes())
    (root / inputs.handler).write_text(HANDLER_PY)
    (root / inputs.requirements_file).write_text("numpy\n")
    (root / inputs.config_file).write_text("minWorkers: 1\nbatchSize: 2\n")
    (root / inputs.extra_file).write_text('{"0": "zero", "1": "one"}')
    extra = root / inputs.extra_dir
    for rel, text in {
        "vocab.txt": "a\nb\n",
        ".env-defaults": "X=1\n",
        "sub/labels.txt": "zero\none\n",
        "sub/deeper/notes.md": "# notes\n",
        "sub/__pycache__/junk.pyc": "junk",
        ".git/config": "[core]\n",
        "__MACOSX/._vocab.txt": "mac",
    }.items():
        path = extra / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return inputs


def tma_executable() -> str | None:
    """The torch-model-archiver 0.12 script next to this interpreter, if installed."""
    beside = Path(sys.executable).with_name("torch-model-archiver")
    if beside.exists():
        return str(beside)
    return shutil.which("torch-model-archiver")


def run_tma(args: list[str], cwd: Path, scratch: Path) -> subprocess.CompletedProcess[str]:
    """Run the real torch-model-archiver; its temp folder goes to ``scratch``."""
    exe = tma_executable()
    assert exe is not None
    scratch.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TMPDIR": str(scratch)}
    return subprocess.run(
        [exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def manifest_bytes(name: str = "tiny", handler: str = "tiny_handler.py") -> bytes:
    return orjson.dumps(
        {
            "createdOn": "01/01/2025 00:00:00",
            "runtime": "python",
            "model": {"modelName": name, "handler": handler, "modelVersion": "1.0"},
            "archiverVersion": "0.12.0",
        }
    )


def write_zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    """A zip with exactly these entries (duplicates allowed), deflated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name" when a test wants one
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for info, data in entries:
                archive.writestr(info, data)
    return path


def zip_info(name: str, mode: int | None = None) -> zipfile.ZipInfo:
    """A ZipInfo whose name is taken verbatim (NUL bytes included) and optional unix mode."""
    info = zipfile.ZipInfo("placeholder")
    info.filename = name  # bypass ZipInfo's NUL truncation to build a hostile name
    info.orig_filename = name
    info.compress_type = zipfile.ZIP_DEFLATED
    if mode is not None:
        info.external_attr = mode << 16
        info.create_system = 3
    return info


def write_tar(
    path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz"
) -> Path:
    """A tar(.gz) with exactly these members; data is given for regular files."""
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                archive.addfile(info)
    return path


def tar_file(name: str, kind: bytes = tarfile.REGTYPE, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def snapshot(root: Path) -> set[str]:
    """Every path under ``root`` (not following symlinks), relative and POSIX-style."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}
