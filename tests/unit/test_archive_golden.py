"""Golden tests against the real torch-model-archiver 0.12.0: same inputs, same archive.

torch-model-archiver ships no archive reader, so the comparison is by zipfile/tarfile listing,
by the manifest bytes, and by extracting both archives with marserve's reader.
"""

from __future__ import annotations

import json
import tarfile
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from archive_fixtures import Inputs, make_inputs, run_tma, tma_executable
from click.testing import CliRunner

from marserve.archive import MANIFEST_PATH, extract_archive, list_members, read_manifest
from marserve.cli.archive import archive as archive_command


def test_the_real_torch_model_archiver_is_installed() -> None:
    """The golden tests need it (the test extra pins 0.12.0): missing is a failure, not a skip."""
    assert tma_executable() is not None


SUFFIX = {"default": ".mar", "zip-store": ".mar", "tgz": ".tar.gz", "no-archive": ""}
EXTRAS = ["--extra-files", "extra,index_to_name.json", "-r", "requirements.txt"]
CASES = [
    ("basic", "default", []),
    ("extras-requirements-config", "default", [*EXTRAS, "-c", "model-config.yaml"]),
    ("builtin-handler", "default", ["--handler", "image_classifier"]),
    ("module-function-handler", "default", ["--handler", "tiny_handler:handle"]),
    ("handler-without-suffix", "default", ["--handler", "tiny_handler"]),
    ("extra-glob", "default", ["--extra-files", "extra/sub/*.txt"]),
    ("tgz", "tgz", [*EXTRAS, "-c", "model-config.yaml"]),
    ("no-archive", "no-archive", [*EXTRAS, "-c", "model-config.yaml"]),
    ("zip-store", "zip-store", []),
    ("python3-runtime", "default", ["--runtime", "python3"]),
]


def argv(inputs: Inputs, out: Path, archive_format: str, extra: list[str]) -> list[str]:
    base = {
        "--model-name": "tiny",
        "--version": "1.0",
        "--model-file": inputs.model_file,
        "--serialized-file": inputs.serialized_file,
        "--handler": inputs.handler,
        "--export-path": str(out),
        "--archive-format": archive_format,
    }
    overridden = dict(zip(extra[::2], extra[1::2], strict=True))
    base.update({k: v for k, v in overridden.items() if k in base})
    rest = [x for k, v in overridden.items() if k not in base for x in (k, v)]
    return [x for pair in base.items() for x in pair] + rest


def shape(value: Any) -> Any:
    """Keys (in order) and value types, recursively."""
    if isinstance(value, dict):
        return [(key, shape(item)) for key, item in value.items()]
    return type(value).__name__


def layout(path: Path) -> dict[str, bytes]:
    """Every member's bytes, by name as stored (the manifest without createdOn)."""
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file()]
        found = {p.relative_to(path).as_posix(): p.read_bytes() for p in files}
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            assert archive.testzip() is None
            found = {name: archive.read(name) for name in archive.namelist()}
    else:
        with tarfile.open(path) as archive:
            found = {}
            for member in archive.getmembers():
                data = archive.extractfile(member)
                assert data is not None
                found[member.name] = data.read()
    return {name: _drop_created_on(name, data) for name, data in found.items()}


def _drop_created_on(name: str, data: bytes) -> bytes:
    if not name.endswith(MANIFEST_PATH):
        return data
    raw = json.loads(data)
    datetime.strptime(raw["createdOn"], "%d/%m/%Y %H:%M:%S")  # same format in both
    raw["createdOn"] = "-"
    return json.dumps(raw, indent=2).encode()


@pytest.mark.parametrize(
    ("archive_format", "extra"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_same_archive_as_torch_model_archiver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archive_format: str, extra: list[str]
) -> None:
    inputs = make_inputs(tmp_path / "in")
    tma_out, our_out = tmp_path / "tma", tmp_path / "ours"
    tma_out.mkdir()
    our_out.mkdir()

    done = run_tma(argv(inputs, tma_out, archive_format, extra), inputs.root, tmp_path / "tmp")
    assert done.returncode == 0, done.stderr
    monkeypatch.chdir(inputs.root)
    result = CliRunner().invoke(archive_command, argv(inputs, our_out, archive_format, extra))
    assert result.exit_code == 0, result.output

    name = f"tiny{SUFFIX[archive_format]}"
    theirs, ours = tma_out / name, our_out / name
    # Same member names and bytes; the manifest is identical but for its timestamp.
    assert layout(ours) == layout(theirs)
    if archive_format in ("default", "zip-store"):
        for path in (theirs, ours):
            with zipfile.ZipFile(path) as archive:
                assert archive.namelist()[-1] == MANIFEST_PATH

    # marserve reads torch-model-archiver's archive, and both the same way.
    their_manifest, our_manifest = read_manifest(theirs), read_manifest(ours)
    assert shape(our_manifest.raw) == shape(their_manifest.raw)
    assert {**our_manifest.raw, "createdOn": ""} == {**their_manifest.raw, "createdOn": ""}
    assert sorted(list_members(ours)) == sorted(list_members(theirs))
    extracted = [extract_archive(p, tmp_path / "staging") for p in (theirs, ours)]
    assert layout(extracted[0].path) == layout(extracted[1].path)
    assert extracted[0].manifest.model_name == "tiny"


def test_manifest_keys_and_types_of_a_full_tma_archive(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    args = argv(inputs, out, "default", [*EXTRAS, "-c", "model-config.yaml"])
    done = run_tma(args, inputs.root, tmp_path / "tmp")
    assert done.returncode == 0, done.stderr
    manifest = read_manifest(out / "tiny.mar")
    assert shape(manifest.raw) == [
        ("createdOn", "str"),
        ("runtime", "str"),
        (
            "model",
            [
                ("modelName", "str"),
                ("serializedFile", "str"),
                ("handler", "str"),
                ("modelFile", "str"),
                ("modelVersion", "str"),
                ("requirementsFile", "str"),
                ("configFile", "str"),
            ],
        ),
        ("archiverVersion", "str"),
    ]
    assert (manifest.requirements_file, manifest.config_file) == (
        "requirements.txt",
        "model-config.yaml",
    )
    assert manifest.archiver_version == "0.12.0"


def test_tma_refuses_to_overwrite_like_marserve(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    args = argv(inputs, out, "default", [])
    assert run_tma(args, inputs.root, tmp_path / "tmp").returncode == 0
    again = run_tma(args, inputs.root, tmp_path / "tmp")
    assert again.returncode != 0
    assert "already exists" in again.stderr
    assert run_tma([*args, "-f"], inputs.root, tmp_path / "tmp").returncode == 0
