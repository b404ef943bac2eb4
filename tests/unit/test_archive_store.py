"""marserve.archive.store: the examples' model-store builder (cache keys, atomic builds, layout)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from marserve.archive import store


def test_content_key_follows_names_contents_and_seed(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("one")
    b.write_text("two")
    key = store.content_key([a, b], seed="archiver")
    assert key == store.content_key([a, b], seed="archiver") and len(key) == 24
    assert len(store.content_key([a], length=16)) == 16
    assert store.content_key([a, b], seed="other") != key
    assert store.content_key([b, a], seed="archiver") != key
    b.write_text("three")
    assert store.content_key([a, b], seed="archiver") != key


def test_cached_build_builds_once_and_a_failure_leaves_nothing(tmp_path: Path) -> None:
    cached = tmp_path / "cache" / "k" / "m.mar"
    calls: list[Path] = []

    def build(scratch: Path) -> Path:
        calls.append(scratch)
        (scratch / "m.mar").write_bytes(b"archive")
        return scratch / "m.mar"

    assert store.cached_build(cached, False, build) is True
    assert store.cached_build(cached, False, build) is False
    assert store.cached_build(cached, True, build) is True
    assert len(calls) == 2 and cached.read_bytes() == b"archive"

    def broken(scratch: Path) -> Path:
        (scratch / "half.mar").write_bytes(b"half")
        raise RuntimeError("archiver failed")

    other = tmp_path / "cache" / "j" / "m.mar"
    with pytest.raises(RuntimeError, match="archiver failed"):
        store.cached_build(other, False, broken)
    assert list(other.parent.iterdir()) == []  # no archive, no scratch folder


def test_run_archiver_names_the_exit_status_and_the_missing_archive(tmp_path: Path) -> None:
    failing = [sys.executable, "-c", "import sys; sys.exit('archiver exploded')"]
    with pytest.raises(RuntimeError, match=r"archiver failed \(exit 1\): archiver exploded"):
        store.run_archiver(failing, tmp_path, "m")
    silent = [sys.executable, "-c", "pass"]
    with pytest.raises(RuntimeError, match=r"it wrote no m\.mar"):
        store.run_archiver(silent, tmp_path, "m")
    writes = [sys.executable, "-c", f"open({str(tmp_path / 'm.mar')!r}, 'wb').write(b'x')"]
    assert store.run_archiver(writes, tmp_path, "m") == tmp_path / "m.mar"


def test_resolve_archiver_defaults_and_finds_a_name_beside_python(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert store.resolve_archiver(None) == list(store.DEFAULT_ARCHIVER)
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH: only the folder beside Python
    name = Path(sys.executable).name
    assert store.resolve_archiver(f"{name} -m x") == [
        str(Path(sys.executable).parent / name),
        "-m",
        "x",
    ]
    assert store.resolve_archiver("no-such-archiver --flag") == ["no-such-archiver", "--flag"]


def test_place_store_writes_the_kserve_layout_and_replaces_atomically(tmp_path: Path) -> None:
    config, archive = tmp_path / "config.properties", tmp_path / "built.mar"
    config.write_text("inference_address=http://127.0.0.1:8085\n")
    archive.write_bytes(b"v1")
    out = tmp_path / "store"
    mar = store.place_store(out, config, archive, "demo")
    assert mar == out / "model-store" / "demo.mar" and mar.read_bytes() == b"v1"
    assert (out / "config" / "config.properties").read_text() == config.read_text()
    replacement = tmp_path / "rebuilt.mar"
    replacement.write_bytes(b"v2")
    store.place_store(out, config, replacement, "demo")
    assert mar.read_bytes() == b"v2"
    assert sorted(p.name for p in mar.parent.iterdir()) == ["demo.mar"]  # no scratch left


def test_parse_store_args_resolves_out_and_the_archiver(tmp_path: Path) -> None:
    out, force, archiver = store.parse_store_args(
        ["--out", str(tmp_path / "s"), "--force", "--archiver", "tma --x"], "d", "f", "a"
    )
    assert (out, force, archiver) == ((tmp_path / "s").resolve(), True, ["tma", "--x"])
    with pytest.raises(SystemExit):
        store.parse_store_args([], "d", "f", "a")
