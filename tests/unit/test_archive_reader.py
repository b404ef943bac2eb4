"""Reading archives: manifest validation, read_manifest/list_members, extraction of good input."""

from __future__ import annotations

import json
import stat
import tarfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from archive_fixtures import manifest_bytes, write_zip

from marserve.archive import (
    DEFAULT_LIMITS,
    ExtractLimits,
    Manifest,
    extract_archive,
    list_members,
    read_manifest,
)
from marserve.errors import ArchiveError, InvalidInput

HANDLER = ("tiny_handler.py", b"def handle(data, context):\n    return data\n")


def tma_manifest(**model: Any) -> dict[str, Any]:
    return {
        "createdOn": "22/11/2026 03:58:36",
        "runtime": "python",
        "model": {
            "modelName": "tiny",
            "serializedFile": "tiny.pt",
            "handler": "tiny_handler.py",
            "modelFile": "model.py",
            "modelVersion": "1.0",
            **model,
        },
        "archiverVersion": "0.12.0",
    }


# -- Manifest ------------------------------------------------------------------------------------


def test_manifest_fields_from_tma_json() -> None:
    raw = tma_manifest(requirementsFile="requirements.txt", configFile="model-config.yaml")
    manifest = Manifest.from_json(json.dumps(raw, indent=2).encode(), "tiny.mar")
    assert manifest.model_name == "tiny"
    assert manifest.model_version == "1.0"
    assert manifest.handler == "tiny_handler.py"
    assert manifest.serialized_file == "tiny.pt"
    assert manifest.model_file == "model.py"
    assert manifest.requirements_file == "requirements.txt"
    assert manifest.config_file == "model-config.yaml"
    assert manifest.runtime == "python"
    assert manifest.is_python
    assert manifest.archiver_version == "0.12.0"
    assert manifest.created_on == "22/11/2026 03:58:36"
    assert manifest.raw == raw
    assert manifest.to_json() == json.dumps(raw, indent=2).encode()


def test_manifest_keeps_unknown_keys_and_optional_fields() -> None:
    raw = {
        "runtime": "python3",
        "model": {"modelName": "m", "handler": "image_classifier", "envelope": "json"},
        "description": "no version, no archiverVersion, no createdOn",
    }
    manifest = Manifest.from_json(orjson.dumps(raw), "m.mar")
    assert manifest.model_version is None
    assert manifest.serialized_file is None
    assert manifest.archiver_version == ""
    assert manifest.created_on is None
    assert orjson.loads(manifest.to_json()) == raw


def test_manifest_handler_parts_and_numeric_version() -> None:
    manifest = Manifest.from_dict(tma_manifest(handler="my_handler:handle", modelVersion=2), "x")
    assert manifest.handler_module == "my_handler"
    assert manifest.handler_function == "handle"
    assert manifest.model_version == "2"
    plain = Manifest.from_dict(tma_manifest(), "x")
    assert (plain.handler_module, plain.handler_function) == ("tiny_handler.py", None)


def test_manifest_lsp_runtime_is_known_but_not_python() -> None:
    raw = tma_manifest()
    raw["runtime"] = "LSP"
    assert not Manifest.from_dict(raw, "x").is_python


def _without(path: str) -> dict[str, Any]:
    raw = tma_manifest()
    *parents, last = path.split(".")
    target = raw
    for part in parents:
        target = target[part]
    del target[last]
    return raw


INVALID = [
    ("no-model-name", _without("model.modelName"), "missing 'model.modelName'"),
    ("no-handler", _without("model.handler"), "missing 'model.handler'"),
    ("no-runtime", _without("runtime"), "missing 'runtime'"),
    ("no-model", _without("model"), "missing 'model' object"),
    ("unknown-runtime", {**tma_manifest(), "runtime": "java"}, "unknown 'runtime' 'java'"),
    ("empty-handler", tma_manifest(handler=""), "'model.handler' is empty"),
    ("name-not-str", tma_manifest(modelName=7), "'model.modelName' must be a string"),
    ("bad-name", tma_manifest(modelName="../up"), "has characters not allowed"),
    ("abs-handler", tma_manifest(handler="/opt/h.py"), "'model.handler' '/opt/h.py' is an abs"),
    ("dotdot-handler", tma_manifest(handler="../h.py:handle"), "contains '..'"),
    ("bad-function", tma_manifest(handler="h.py:not valid"), "names no valid function"),
    ("abs-weights", tma_manifest(serializedFile="/etc/passwd"), "'model.serializedFile'"),
    ("dotdot-model", tma_manifest(modelFile="a/../../m.py"), "'model.modelFile'"),
    ("drive-config", tma_manifest(configFile="C:cfg.yaml"), "'model.configFile'"),
    ("backslash-reqs", tma_manifest(requirementsFile="..\\r.txt"), "'model.requirementsFile'"),
    ("nul-weights", tma_manifest(serializedFile="a\x00.pt"), "NUL byte"),
    ("not-object", [1, 2], "must be a JSON object"),
]


@pytest.mark.parametrize(("raw", "fragment"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_manifest_rejects(raw: Any, fragment: str) -> None:
    with pytest.raises(ArchiveError) as caught:
        Manifest.from_json(orjson.dumps(raw), "bad.mar")
    assert str(caught.value).startswith("bad.mar: MAR-INF/MANIFEST.json: ")
    assert fragment in str(caught.value)
    assert isinstance(caught.value, InvalidInput)


def test_manifest_rejects_invalid_json_and_huge_input() -> None:
    with pytest.raises(ArchiveError, match="not valid JSON"):
        Manifest.from_json(b"{not json", "bad.mar")
    with pytest.raises(ArchiveError, match="larger than"):
        Manifest.from_json(b" " * (2 << 20), "bad.mar")


def test_manifest_build_matches_tma_layout() -> None:
    manifest = Manifest.build(model_name="tiny", handler="image_classifier")
    assert list(manifest.raw) == ["createdOn", "runtime", "model", "archiverVersion"]
    assert manifest.raw["model"] == {"modelName": "tiny", "handler": "image_classifier"}
    assert manifest.to_json() == json.dumps(manifest.raw, indent=2).encode()


# -- reading and extracting good archives --------------------------------------------------------


def _good_zip(path: Path) -> Path:
    return write_zip(
        path,
        [
            HANDLER,
            ("tiny.pt", b"\x80weights" * 10),
            ("sub/", b""),
            ("sub/labels.txt", b"zero\none\n"),
            ("zeros.bin", bytes(100_000)),  # very compressible, but under the ratio grace
            ("MAR-INF/MANIFEST.json", manifest_bytes()),
        ],
    )


def _contents(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_extract_zip(tmp_path: Path) -> None:
    archive = _good_zip(tmp_path / "tiny.mar")
    staging = tmp_path / "staging"
    extracted = extract_archive(archive, staging)
    assert extracted.path.parent == staging
    assert stat.S_IMODE(extracted.path.stat().st_mode) == 0o700
    assert extracted.manifest.model_name == "tiny"
    files = _contents(extracted.path)
    assert files["tiny_handler.py"] == HANDLER[1]
    assert files["sub/labels.txt"] == b"zero\none\n"
    assert files["zeros.bin"] == bytes(100_000)
    assert set(files) == {
        "tiny_handler.py",
        "tiny.pt",
        "sub/labels.txt",
        "zeros.bin",
        "MAR-INF/MANIFEST.json",
    }
    again = extract_archive(archive, staging)
    assert again.path != extracted.path  # always a fresh folder


def test_read_manifest_and_list_members_without_extracting(tmp_path: Path) -> None:
    archive = _good_zip(tmp_path / "tiny.mar")
    assert read_manifest(archive).model_name == "tiny"
    assert list_members(archive) == [
        ("tiny_handler.py", len(HANDLER[1])),
        ("tiny.pt", 80),
        ("sub/labels.txt", 9),
        ("zeros.bin", 100_000),
        ("MAR-INF/MANIFEST.json", len(manifest_bytes())),
    ]
    assert sorted(tmp_path.iterdir()) == [archive]


def test_extract_tgz_with_top_folder_is_unwrapped(tmp_path: Path) -> None:
    src = tmp_path / "src" / "tiny"
    (src / "MAR-INF").mkdir(parents=True)
    (src / "MAR-INF" / "MANIFEST.json").write_bytes(manifest_bytes())
    (src / HANDLER[0]).write_bytes(HANDLER[1])
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="tiny")
    assert read_manifest(archive).model_name == "tiny"
    extracted = extract_archive(archive, tmp_path / "staging")
    assert set(_contents(extracted.path)) == {"tiny_handler.py", "MAR-INF/MANIFEST.json"}


@pytest.mark.parametrize("mode", ["w:gz", "w"])
def test_extract_tar_made_with_dot_names(tmp_path: Path, mode: str) -> None:
    """``tar -C model -czf model.tar.gz .`` writes ``./`` and ``./name`` members."""
    src = tmp_path / "model"
    (src / "MAR-INF").mkdir(parents=True)
    (src / "MAR-INF" / "MANIFEST.json").write_bytes(manifest_bytes())
    (src / HANDLER[0]).write_bytes(HANDLER[1])
    archive = tmp_path / ("m.tar.gz" if mode == "w:gz" else "m.tar")
    with tarfile.open(archive, mode) as tar:
        tar.add(src, arcname=".")
    assert "./tiny_handler.py" in dict(list_members(archive))
    extracted = extract_archive(archive, tmp_path / "staging")
    assert _contents(extracted.path)["tiny_handler.py"] == HANDLER[1]


def test_zip_with_single_top_folder_is_unwrapped(tmp_path: Path) -> None:
    archive = write_zip(
        tmp_path / "nested.mar",
        [("tiny/" + HANDLER[0], HANDLER[1]), ("tiny/MAR-INF/MANIFEST.json", manifest_bytes())],
    )
    assert read_manifest(archive).model_name == "tiny"
    extracted = extract_archive(archive, tmp_path / "staging")
    assert set(_contents(extracted.path)) == {"tiny_handler.py", "MAR-INF/MANIFEST.json"}


def test_extract_folder_copies_and_resolves_inner_symlinks(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "MAR-INF").mkdir(parents=True)
    (folder / "MAR-INF" / "MANIFEST.json").write_bytes(manifest_bytes())
    (folder / HANDLER[0]).write_bytes(HANDLER[1])
    (folder / "weights").mkdir()
    (folder / "weights" / "real.pt").write_bytes(b"w" * 10)
    (folder / "tiny.pt").symlink_to(folder / "weights" / "real.pt")
    assert read_manifest(folder).model_name == "tiny"
    extracted = extract_archive(folder, tmp_path / "staging")
    copied = extracted.path / "tiny.pt"
    assert not copied.is_symlink()
    assert copied.read_bytes() == b"w" * 10
    assert set(_contents(extracted.path)) == {
        "MAR-INF/MANIFEST.json",
        "tiny_handler.py",
        "tiny.pt",
        "weights/real.pt",
    }
    assert (folder / "tiny.pt").is_symlink()  # the source is left alone


def test_folder_without_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / HANDLER[0]).write_bytes(HANDLER[1])
    with pytest.raises(ArchiveError, match=r"model: no MAR-INF/MANIFEST\.json"):
        read_manifest(folder)
    with pytest.raises(ArchiveError, match=r"model: no MAR-INF/MANIFEST\.json"):
        extract_archive(folder, tmp_path / "staging")
    assert list((tmp_path / "staging").iterdir()) == []


def test_extracted_files_are_private(tmp_path: Path) -> None:
    extracted = extract_archive(_good_zip(tmp_path / "tiny.mar"), tmp_path / "staging")
    for path in extracted.path.rglob("*"):
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_default_limits() -> None:
    assert ExtractLimits() == DEFAULT_LIMITS
    assert DEFAULT_LIMITS.max_members == 10_000
    assert DEFAULT_LIMITS.max_member_bytes == DEFAULT_LIMITS.max_total_bytes == 4 << 30
    assert DEFAULT_LIMITS.max_ratio == 200.0


def test_extract_and_read_manifest_agree(tmp_path: Path) -> None:
    archive = _good_zip(tmp_path / "tiny.mar")
    extracted = extract_archive(archive, tmp_path / "staging")
    assert extracted.manifest == read_manifest(archive)
    assert extracted.manifest == read_manifest(extracted.path)
