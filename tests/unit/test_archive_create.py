"""Creating archives (library and ``marserve archive`` CLI) and inspecting them."""

from __future__ import annotations

import json
import logging
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from archive_fixtures import Inputs, make_inputs, weights_bytes
from click.testing import CliRunner

from marserve.archive import create_archive, extract_archive, list_members, read_manifest
from marserve.cli import archive as archive_cli
from marserve.errors import ArchiveError

EXTRA_LAYOUT = {
    "vocab.txt",
    ".env-defaults",
    "sub/labels.txt",
    "sub/deeper/notes.md",
    "index_to_name.json",
}


@pytest.fixture
def inputs(tmp_path: Path) -> Inputs:
    return make_inputs(tmp_path / "in")


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def full(inputs: Inputs, out: Path, **overrides: Any) -> dict[str, Any]:
    root = inputs.root
    options: dict[str, Any] = {
        "model_name": "tiny",
        "version": "1.0",
        "model_file": root / inputs.model_file,
        "serialized_file": root / inputs.serialized_file,
        "handler": str(root / inputs.handler),
        "export_path": out,
    }
    options.update(overrides)
    return options


def test_default_archive_layout(inputs: Inputs, out: Path) -> None:
    path = create_archive(**full(inputs, out))
    assert path == out / "tiny.mar"
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert names[-1] == "MAR-INF/MANIFEST.json"
        assert set(names) == {"model.py", "tiny.pt", "tiny_handler.py", "MAR-INF/MANIFEST.json"}
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_DEFLATED}
        assert archive.read("tiny.pt") == weights_bytes()
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
    assert manifest["model"] == {
        "modelName": "tiny",
        "serializedFile": "tiny.pt",
        "handler": "tiny_handler.py",
        "modelFile": "model.py",
        "modelVersion": "1.0",
    }
    assert manifest["runtime"] == "python"
    assert manifest["archiverVersion"] == "0.12.0"
    assert sorted(p.name for p in out.iterdir()) == ["tiny.mar"]  # no temp file left


def test_version_is_optional(inputs: Inputs, out: Path) -> None:
    path = create_archive(**full(inputs, out, version=None))
    manifest = read_manifest(path)
    assert manifest.model_version is None
    assert "modelVersion" not in manifest.raw["model"]


def test_builtin_handler_name_packs_no_file(inputs: Inputs, out: Path) -> None:
    path = create_archive(**full(inputs, out, handler="image_classifier", model_file=None))
    assert {name for name, _ in list_members(path)} == {"tiny.pt", "MAR-INF/MANIFEST.json"}
    assert read_manifest(path).handler == "image_classifier"


@pytest.mark.parametrize("handler", ["tiny_handler:handle", "tiny_handler.py:handle"])
def test_module_function_handler(
    inputs: Inputs, out: Path, monkeypatch: pytest.MonkeyPatch, handler: str
) -> None:
    monkeypatch.chdir(inputs.root)
    path = create_archive(**full(inputs, out, handler=handler))
    manifest = read_manifest(path)
    assert manifest.handler == handler
    assert manifest.handler_function == "handle"
    assert "tiny_handler.py" in dict(list_members(path))


def test_handler_in_a_subfolder(inputs: Inputs, out: Path) -> None:
    handlers = inputs.root / "handlers"
    handlers.mkdir()
    (handlers / "custom.py").write_text("def run(data, context):\n    return data\n")
    path = create_archive(**full(inputs, out, handler=f"{handlers / 'custom.py'}:run"))
    assert read_manifest(path).handler == "custom.py:run"
    assert "custom.py" in dict(list_members(path))
    with pytest.raises(ArchiveError, match="names no valid function"):
        create_archive(**full(inputs, out, handler=f"{handlers / 'custom.py'}:a/b", force=True))


def test_extra_files_folder_contents_go_to_the_root(inputs: Inputs, out: Path) -> None:
    root = inputs.root
    extra = f"{root / inputs.extra_dir},{root / inputs.extra_file}"
    path = create_archive(**full(inputs, out, extra_files=extra))
    names = {name for name, _ in list_members(path)}
    assert names - {"model.py", "tiny.pt", "tiny_handler.py", "MAR-INF/MANIFEST.json"} == (
        EXTRA_LAYOUT
    )


def test_extra_files_as_a_list_and_globs(inputs: Inputs, out: Path) -> None:
    root = inputs.root
    extras = [root / inputs.extra_dir / "sub" / "*.txt", root / inputs.extra_file]
    path = create_archive(**full(inputs, out, extra_files=extras))
    assert {"labels.txt", "index_to_name.json"} <= dict(list_members(path)).keys()


def test_extra_glob_without_match_warns(
    inputs: Inputs, out: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="marserve.archive.create"):
        create_archive(**full(inputs, out, extra_files=str(inputs.root / "nothing*.bin")))
    assert "matched no file" in caplog.text


def test_a_later_file_of_the_same_name_wins(inputs: Inputs, out: Path) -> None:
    override = inputs.root / "override"
    override.mkdir()
    (override / "tiny_handler.py").write_text("# from extra files\n")
    path = create_archive(**full(inputs, out, extra_files=str(override)))
    extracted = extract_archive(path, out / "staging")
    assert (extracted.path / "tiny_handler.py").read_text() == "# from extra files\n"


def test_existing_archive_needs_force(inputs: Inputs, out: Path) -> None:
    path = create_archive(**full(inputs, out))
    before = path.read_bytes()
    with pytest.raises(ArchiveError, match=r"tiny\.mar already exists; use --force/-f"):
        create_archive(**full(inputs, out, version="2.0"))
    assert path.read_bytes() == before
    create_archive(**full(inputs, out, version="2.0", force=True))
    assert read_manifest(path).model_version == "2.0"
    assert sorted(p.name for p in out.iterdir()) == ["tiny.mar"]


BAD_OPTIONS = [
    ("model-name", {"model_name": "bad name"}, "has characters not allowed"),
    ("model-name-slash", {"model_name": "../up"}, "has characters not allowed"),
    ("missing-weights", {"serialized_file": "/nonexistent/w.pt"}, "serialized file"),
    ("missing-handler", {"handler": "/nonexistent/h.py"}, "handler file"),
    ("missing-extra", {"extra_files": "/nonexistent/extra.txt"}, "does not exist"),
    ("export-path", {"export_path": "/nonexistent/out"}, "is not a folder"),
    ("runtime", {"runtime": "java"}, "unknown runtime"),
    ("format", {"archive_format": "rar"}, "unknown archive format"),
]


@pytest.mark.parametrize(
    ("overrides", "fragment"), [c[1:] for c in BAD_OPTIONS], ids=[c[0] for c in BAD_OPTIONS]
)
def test_bad_options(inputs: Inputs, out: Path, overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ArchiveError, match=fragment):
        create_archive(**full(inputs, out, **overrides))
    assert list(out.iterdir()) == []


def test_extra_files_cannot_replace_the_manifest(inputs: Inputs, out: Path) -> None:
    sneaky = inputs.root / "sneaky"
    (sneaky / "MAR-INF").mkdir(parents=True)
    (sneaky / "MAR-INF" / "MANIFEST.json").write_text("{}")
    with pytest.raises(ArchiveError, match=r"would replace the archive.s MAR-INF/MANIFEST\.json"):
        create_archive(**full(inputs, out, extra_files=str(sneaky)))


def test_tgz_layout(inputs: Inputs, out: Path) -> None:
    path = create_archive(**full(inputs, out, archive_format="tgz"))
    assert path == out / "tiny.tar.gz"
    with tarfile.open(path) as archive:
        names = archive.getnames()
        assert all(m.isreg() for m in archive.getmembers())
    assert names[-1] == "tiny/MAR-INF/MANIFEST.json"
    assert set(names) == {f"tiny/{n}" for n in ("model.py", "tiny.pt", "tiny_handler.py")} | {
        "tiny/MAR-INF/MANIFEST.json"
    }
    assert read_manifest(path).model_name == "tiny"


def test_no_archive_writes_a_folder(inputs: Inputs, out: Path) -> None:
    path = create_archive(**full(inputs, out, archive_format="no-archive"))
    assert path == out / "tiny"
    files = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert files == {"model.py", "tiny.pt", "tiny_handler.py", "MAR-INF/MANIFEST.json"}
    with pytest.raises(ArchiveError, match="already exists"):
        create_archive(**full(inputs, out, archive_format="no-archive"))
    (path / "stale.txt").write_text("kept, as torch-model-archiver keeps it")
    create_archive(**full(inputs, out, archive_format="no-archive", force=True, version="2"))
    assert read_manifest(path).model_version == "2"
    assert (path / "stale.txt").exists()


def test_zip_store_is_uncompressed(inputs: Inputs, out: Path) -> None:
    path = create_archive(**full(inputs, out, archive_format="zip-store"))
    with zipfile.ZipFile(path) as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}


@pytest.mark.parametrize("archive_format", ["default", "tgz", "no-archive"])
def test_progress_hook_sees_every_byte(inputs: Inputs, out: Path, archive_format: str) -> None:
    calls: list[tuple[int, int]] = []
    create_archive(
        **full(inputs, out, archive_format=archive_format),
        progress=lambda advance, total: calls.append((advance, total)),
    )
    root = inputs.root
    expected = sum(
        (root / name).stat().st_size
        for name in (inputs.model_file, inputs.serialized_file, inputs.handler)
    )
    assert sum(advance for advance, _ in calls) == expected
    assert {total for _, total in calls} == {expected}


# -- CLI -----------------------------------------------------------------------------------------


def invoke(*args: str) -> Any:
    return CliRunner().invoke(archive_cli.archive, list(args), catch_exceptions=False)


def cli_args(inputs: Inputs, out: Path, *extra: str) -> list[str]:
    return [
        "--model-name",
        "tiny",
        "--version",
        "1.0",
        "--model-file",
        inputs.model_file,
        "--serialized-file",
        inputs.serialized_file,
        "--handler",
        inputs.handler,
        "--export-path",
        str(out),
        *extra,
    ]


def test_cli_help() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for flag in (
        "--model-name",
        "--version",
        "--model-file",
        "--serialized-file",
        "--handler",
        "--extra-files",
        "--requirements-file",
        "--config-file",
        "--runtime",
        "--export-path",
        "--archive-format",
        "--force",
        "inspect",
    ):
        assert flag in result.output
    inspect_help = invoke("inspect", "--help")
    assert inspect_help.exit_code == 0
    assert "manifest" in inspect_help.output.lower()


def test_cli_creates_and_refuses_to_overwrite(
    inputs: Inputs, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(inputs.root)
    args = cli_args(inputs, out, "-r", inputs.requirements_file, "-c", inputs.config_file)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert str(out / "tiny.mar") in result.output
    manifest = read_manifest(out / "tiny.mar")
    assert manifest.requirements_file == "requirements.txt"
    assert manifest.config_file == "model-config.yaml"
    again = invoke(*args)
    assert again.exit_code == 1
    assert "already exists; use --force/-f" in again.output
    assert invoke(*args, "-f").exit_code == 0


def test_cli_short_flags_and_formats(
    inputs: Inputs, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(inputs.root)
    result = invoke(
        "--model-name", "tiny", "-v", "3", "--handler", "image_classifier",
        "--serialized-file", inputs.serialized_file, "--export-path", str(out),
        "--archive-format", "tgz", "--runtime", "python3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out / "tiny.tar.gz")
    assert (manifest.model_version, manifest.runtime) == ("3", "python3")


def test_cli_missing_required_options(inputs: Inputs, out: Path) -> None:
    result = CliRunner().invoke(archive_cli.archive, ["--handler", "image_classifier"])
    assert result.exit_code == 2
    assert "--model-name" in result.output
    result = CliRunner().invoke(archive_cli.archive, ["--model-name", "tiny"])
    assert result.exit_code == 2
    assert "--handler" in result.output


def test_cli_rejects_archive_options_with_a_subcommand(inputs: Inputs, out: Path) -> None:
    path = create_archive(**full(inputs, out))
    result = CliRunner().invoke(archive_cli.archive, ["--model-name", "x", "inspect", str(path)])
    assert result.exit_code == 2
    assert "cannot be combined" in result.output


def test_cli_inspect(inputs: Inputs, out: Path) -> None:
    path = create_archive(**full(inputs, out))
    result = invoke("inspect", str(path))
    assert result.exit_code == 0, result.output
    assert '"modelName": "tiny"' in result.output
    assert "Members (4 files" in result.output
    for name, size in list_members(path):
        assert f"{size}  {name}" in result.output
    as_json = json.loads(invoke("inspect", "--json", str(path)).output)
    assert as_json["manifest"] == read_manifest(path).raw
    assert {m["name"] for m in as_json["members"]} == {name for name, _ in list_members(path)}


def test_cli_inspect_reports_a_bad_archive(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mar"
    bad.write_text("nope")
    result = CliRunner().invoke(archive_cli.archive, ["inspect", str(bad)])
    assert result.exit_code == 1
    assert "bad.mar: not a zip (.mar) or tar.gz archive" in result.output


def test_cli_progress_bar_for_large_weights(
    inputs: Inputs, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(inputs.root)
    with archive_cli._progress(inputs.serialized_file) as hook:
        assert hook is None  # a tiny file: no bar
    monkeypatch.setattr(archive_cli, "LARGE_FILE_BYTES", 1)
    with archive_cli._progress(inputs.serialized_file) as hook:
        assert hook is not None
        hook(10, 100)
    result = invoke(*cli_args(inputs, out))
    assert result.exit_code == 0, result.output
    assert read_manifest(out / "tiny.mar").model_name == "tiny"
