"""Hostile archives: every rejection names the member, writes nothing outside, cleans up."""

from __future__ import annotations

import gzip
import io
import os
import stat
import struct
import tarfile
import unicodedata
import zipfile
from pathlib import Path

import pytest
from archive_fixtures import manifest_bytes, snapshot, tar_file, write_tar, write_zip, zip_info

from marserve.archive import (
    DEFAULT_LIMITS,
    ExtractLimits,
    extract_archive,
    list_members,
    read_manifest,
)
from marserve.archive.members import Entry, Stager
from marserve.errors import ArchiveError

HANDLER = ("tiny_handler.py", b"def handle(data, context):\n    return data\n")
MANIFEST = ("MAR-INF/MANIFEST.json", manifest_bytes())
SMALL = ExtractLimits(
    max_members=5,
    max_member_bytes=1000,
    max_total_bytes=1500,
    max_ratio=20.0,
    ratio_grace_bytes=512,
)


def expect_rejected(
    tmp_path: Path,
    archive: Path,
    member: str | None,
    reason: str,
    limits: ExtractLimits = DEFAULT_LIMITS,
) -> str:
    """Extract ``archive``; assert a clean, well-named rejection and return the message."""
    staging = tmp_path / "staging"
    before = snapshot(tmp_path)
    with pytest.raises(ArchiveError) as caught:
        extract_archive(archive, staging, limits)
    message = str(caught.value)
    assert message.startswith(f"{archive.name}: "), message
    if member is not None:
        assert f"member {member!r}" in message, message
    assert reason in message, message
    leftovers = sorted(staging.iterdir()) if staging.exists() else []
    assert leftovers == [], "the staging folder was not removed"
    assert snapshot(tmp_path) - before <= {"staging"}, "something was written outside"
    return message


# -- zip -----------------------------------------------------------------------------------------

ZIP_MEMBER_CASES = [
    ("dotdot", "../evil.py", "'..'"),
    ("dotdot-inside", "sub/../../evil.py", "'..'"),
    ("absolute", "/tmp/evil.py", "absolute path"),
    ("drive-letter", "C:/evil.py", "drive letter"),
    ("drive-relative", "c:evil.py", "drive letter"),
    ("backslash", "..\\evil.py", "backslash"),
    ("backslash-only", "sub\\evil.py", "backslash"),
    ("nul-byte", "evil.py\x00.txt", "NUL byte"),
    ("control-char", "evil\n.py", "control character"),
    ("duplicate", "tiny_handler.py", "duplicate name"),
    ("case-collision", "TINY_HANDLER.py", "duplicate name"),
    ("file-then-folder", "tiny_handler.py/inner.py", "clashes with a file"),
    ("dot-only", ".", "names no file"),
]


@pytest.mark.parametrize(
    ("name", "reason"), [c[1:] for c in ZIP_MEMBER_CASES], ids=[c[0] for c in ZIP_MEMBER_CASES]
)
def test_zip_member_name_rejected(tmp_path: Path, name: str, reason: str) -> None:
    archive = write_zip(
        tmp_path / "evil.mar", [HANDLER, (zip_info(name), b"pwned = True\n"), MANIFEST]
    )
    expect_rejected(tmp_path, archive, name, reason)
    assert not (tmp_path / "evil.py").exists()


def test_zip_unicode_normalization_collision(tmp_path: Path) -> None:
    composed, decomposed = (unicodedata.normalize(f, "café.py") for f in ("NFC", "NFD"))
    archive = write_zip(
        tmp_path / "u.mar", [(composed, b"a"), (zip_info(decomposed), b"b"), MANIFEST]
    )
    expect_rejected(tmp_path, archive, decomposed, "duplicate name")


def test_zip_folder_case_collision(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "c.mar", [("Sub/a.py", b"a"), ("sub/b.py", b"b"), MANIFEST])
    expect_rejected(tmp_path, archive, "sub/b.py", "collides with 'Sub'")


ZIP_TYPE_CASES = [
    ("symlink", stat.S_IFLNK | 0o777, b"../../etc/passwd", "symbolic link"),
    ("char-device", stat.S_IFCHR | 0o644, b"", "device"),
    ("block-device", stat.S_IFBLK | 0o644, b"", "device"),
    ("fifo", stat.S_IFIFO | 0o644, b"", "FIFO"),
    ("socket", stat.S_IFSOCK | 0o644, b"", "socket"),
]


@pytest.mark.parametrize(
    ("mode", "data", "reason"), [c[1:] for c in ZIP_TYPE_CASES], ids=[c[0] for c in ZIP_TYPE_CASES]
)
def test_zip_special_member_rejected(tmp_path: Path, mode: int, data: bytes, reason: str) -> None:
    archive = write_zip(tmp_path / "t.mar", [HANDLER, (zip_info("special", mode), data), MANIFEST])
    expect_rejected(tmp_path, archive, "special", reason)


def test_zip_encrypted_member_rejected(tmp_path: Path) -> None:
    # zipfile resets the flags when writing, so set the "encrypted" bit in the headers afterwards
    archive = write_zip(tmp_path / "enc.mar", [HANDLER, ("secret.py", b"x"), MANIFEST])
    archive.write_bytes(_patch_headers(archive.read_bytes(), b"secret.py", "flags", 0x1))
    expect_rejected(tmp_path, archive, "secret.py", "encrypted")


def test_zip_too_many_members(tmp_path: Path) -> None:
    """Refused from the end record, before zipfile parses the whole central directory."""
    files = [(f"f{i}.txt", b"x") for i in range(5)]
    archive = write_zip(tmp_path / "many.mar", [HANDLER, *files, MANIFEST])
    expect_rejected(tmp_path, archive, None, "lists 7 members, more than 5", SMALL)


def test_zip_end_record_that_understates_the_count(tmp_path: Path) -> None:
    """A lying end record does not help: every entry is still counted."""
    files = [(f"f{i}.txt", b"x") for i in range(5)]
    path = write_zip(tmp_path / "many.mar", [HANDLER, *files, MANIFEST])
    data = bytearray(path.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    struct.pack_into("<HH", data, end + 8, 2, 2)
    path.write_bytes(bytes(data))
    expect_rejected(tmp_path, path, "f4.txt", "more than 5 members", SMALL)


def test_zip_huge_central_directory(tmp_path: Path) -> None:
    limits = ExtractLimits(max_members=1)
    names = [("n" * 4000 + str(i), b"") for i in range(2)]
    archive = write_zip(tmp_path / "dir.mar", [*names])
    expect_rejected(tmp_path, archive, None, "more than 1", limits)
    path = write_zip(tmp_path / "dir2.mar", [("x" * 9000, b"")])
    expect_rejected(tmp_path, path, None, "central directory of", limits)


def test_zip_member_too_large(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "big.mar", [HANDLER, ("big.bin", os.urandom(1001)), MANIFEST])
    expect_rejected(tmp_path, archive, "big.bin", "larger than 1000 bytes", SMALL)


def test_zip_total_too_large(tmp_path: Path) -> None:
    parts = [("a.bin", os.urandom(800)), ("b.bin", os.urandom(800))]
    archive = write_zip(tmp_path / "total.mar", [HANDLER, *parts, MANIFEST])
    expect_rejected(tmp_path, archive, "b.bin", "expands past 1500 bytes", SMALL)


def test_zip_compression_ratio_bomb(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "bomb.mar", [HANDLER, ("zeros.bin", bytes(900)), MANIFEST])
    expect_rejected(tmp_path, archive, "zeros.bin", "compression ratio above 20", SMALL)


def test_zip_crc_error(tmp_path: Path) -> None:
    payload = b"A" * 200
    path = tmp_path / "crc.mar"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(*HANDLER)
        archive.writestr("weights.bin", payload)
        archive.writestr(*MANIFEST)
    data = bytearray(path.read_bytes())
    data[data.index(payload) + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    expect_rejected(tmp_path, path, "weights.bin", "CRC")


_LOCAL = (b"PK\x03\x04", 26, 30, {"flags": 6, "size": 22})
_CENTRAL = (b"PK\x01\x02", 28, 46, {"flags": 8, "size": 24})


def _patch_headers(data: bytes, name: bytes, field: str, value: int) -> bytes:
    """Rewrite one header field (``flags`` or ``size``) of a member, local and central."""
    buf = bytearray(data)
    for signature, name_len_at, name_at, fields in (_LOCAL, _CENTRAL):
        start = 0
        while (start := buf.find(signature, start)) >= 0:
            (length,) = struct.unpack_from("<H", buf, start + name_len_at)
            if bytes(buf[start + name_at : start + name_at + length]) == name:
                fmt = "<H" if field == "flags" else "<I"
                struct.pack_into(fmt, buf, start + fields[field], value)
            start += 4
    return bytes(buf)


def test_zip_header_that_understates_the_size(tmp_path: Path) -> None:
    """The header claims 10 bytes; the data holds more. Never trusted: CRC mismatch."""
    path = write_zip(tmp_path / "lie.mar", [HANDLER, ("w.bin", os.urandom(900)), MANIFEST])
    path.write_bytes(_patch_headers(path.read_bytes(), b"w.bin", "size", 10))
    expect_rejected(tmp_path, path, "w.bin", "CRC", SMALL)


def test_zip_header_that_overstates_the_size(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "lie.mar", [HANDLER, ("w.bin", os.urandom(100)), MANIFEST])
    path.write_bytes(_patch_headers(path.read_bytes(), b"w.bin", "size", 5000))
    expect_rejected(tmp_path, path, "w.bin", "larger than 1000 bytes", SMALL)


def test_streaming_count_ignores_the_declared_size(tmp_path: Path) -> None:
    """The writer counts real bytes: a stream longer than its declared size is cut at the cap."""
    root = tmp_path / "root"
    root.mkdir()
    stager = Stager(root, "x.mar", SMALL)
    entry = Entry("w.bin", "w.bin", False, 10)
    with pytest.raises(ArchiveError, match=r"member 'w.bin': larger than 1000 bytes"):
        stager.write(entry, io.BytesIO(os.urandom(5000)))
    assert (root / "w.bin").stat().st_size <= 1000


def test_truncated_zip(tmp_path: Path) -> None:
    whole = write_zip(tmp_path / "whole.zip", [HANDLER, ("w.bin", os.urandom(4000)), MANIFEST])
    cut = tmp_path / "cut.mar"
    cut.write_bytes(whole.read_bytes()[:3000])
    expect_rejected(tmp_path, cut, None, "not a readable zip archive")


def test_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "notes.mar"
    path.write_text("just some text, not an archive\n")
    expect_rejected(tmp_path, path, None, "not a zip (.mar) or tar.gz archive")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mar"
    path.touch()
    expect_rejected(tmp_path, path, None, "empty file")


def test_missing_archive(tmp_path: Path) -> None:
    expect_rejected(tmp_path, tmp_path / "absent.mar", None, "no such archive")


def test_zip_without_manifest(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "nomanifest.mar", [HANDLER])
    expect_rejected(tmp_path, archive, None, "no MAR-INF/MANIFEST.json")


def test_zip_with_invalid_manifest_is_cleaned_up(tmp_path: Path) -> None:
    archive = write_zip(
        tmp_path / "bad.mar", [HANDLER, ("MAR-INF/MANIFEST.json", b'{"runtime": "python"}')]
    )
    expect_rejected(tmp_path, archive, None, "missing 'model' object")


def test_read_manifest_and_list_members_reject_hostile_names(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "evil.mar", [("../evil.py", b"x"), MANIFEST])
    for call in (read_manifest, list_members):
        with pytest.raises(ArchiveError, match=r"member '\.\./evil\.py'"):
            call(archive)


# -- tar.gz --------------------------------------------------------------------------------------

TAR_CASES = [
    ("dotdot", tar_file("../evil.py"), b"x", "../evil.py", "'..'"),
    ("absolute", tar_file("/tmp/evil.py"), b"x", "/tmp/evil.py", "absolute path"),
    ("backslash", tar_file("..\\evil.py"), b"x", "..\\evil.py", "backslash"),
    (
        "nul-in-pax-path",
        tar_file("plain.py", pax_headers={"path": "evil\x00.py"}),
        b"x",
        "evil\x00.py",
        "NUL byte",
    ),
    (
        "symlink",
        tar_file("link", tarfile.SYMTYPE, linkname="/etc/passwd"),
        None,
        "link",
        "symbolic link",
    ),
    (
        "hardlink",
        tar_file("hard", tarfile.LNKTYPE, linkname="tiny_handler.py"),
        None,
        "hard",
        "hard link",
    ),
    ("char-device", tar_file("dev", tarfile.CHRTYPE), None, "dev", "device"),
    ("block-device", tar_file("dev", tarfile.BLKTYPE), None, "dev", "device"),
    ("fifo", tar_file("pipe", tarfile.FIFOTYPE), None, "pipe", "FIFO"),
    ("duplicate", tar_file("tiny_handler.py"), b"x", "tiny_handler.py", "duplicate name"),
    ("case-collision", tar_file("Tiny_Handler.PY"), b"x", "Tiny_Handler.PY", "duplicate name"),
]


@pytest.mark.parametrize(
    ("info", "data", "member", "reason"),
    [c[1:] for c in TAR_CASES],
    ids=[c[0] for c in TAR_CASES],
)
def test_tgz_member_rejected(
    tmp_path: Path, info: tarfile.TarInfo, data: bytes | None, member: str, reason: str
) -> None:
    members = [
        (tar_file(HANDLER[0]), HANDLER[1]),
        (info, data),
        (tar_file(MANIFEST[0]), MANIFEST[1]),
    ]
    archive = write_tar(tmp_path / "evil.tar.gz", members)
    expect_rejected(tmp_path, archive, member, reason)
    assert not (tmp_path / "evil.py").exists()
    assert not (tmp_path / "link").exists()


def _tar_members(*extra: tuple[str, bytes]) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    items = [HANDLER, *extra, MANIFEST]
    return [(tar_file(name), data) for name, data in items]


def test_tgz_too_many_members(tmp_path: Path) -> None:
    archive = write_tar(
        tmp_path / "many.tar.gz", _tar_members(*[(f"f{i}", b"x") for i in range(5)])
    )
    expect_rejected(tmp_path, archive, "f4", "more than 5 members", SMALL)


def test_tgz_member_too_large(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "big.tar.gz", _tar_members(("big.bin", os.urandom(1001))))
    expect_rejected(tmp_path, archive, "big.bin", "larger than 1000 bytes", SMALL)


def test_tgz_total_too_large(tmp_path: Path) -> None:
    parts = [("a.bin", os.urandom(800)), ("b.bin", os.urandom(800))]
    archive = write_tar(tmp_path / "total.tar.gz", _tar_members(*parts))
    expect_rejected(tmp_path, archive, "b.bin", "expands past 1500 bytes", SMALL)


def test_tgz_compression_ratio_bomb(tmp_path: Path) -> None:
    limits = ExtractLimits(max_ratio=20.0, ratio_grace_bytes=4096)
    archive = write_tar(tmp_path / "bomb.tar.gz", _tar_members(("zeros.bin", bytes(400_000))))
    expect_rejected(tmp_path, archive, "zeros.bin", "compression ratio above 20", limits)


def test_truncated_tgz(tmp_path: Path) -> None:
    whole = write_tar(tmp_path / "whole.tgz", _tar_members(("w.bin", os.urandom(8000))))
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[:5000])
    expect_rejected(tmp_path, cut, "w.bin", "")


def test_tgz_bad_gzip_crc(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "crc.tar.gz", _tar_members(("w.bin", b"weights" * 50)))
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the gzip trailer's CRC-32
    path.write_bytes(bytes(data))
    expect_rejected(tmp_path, path, None, "CRC check failed")


def test_tar_with_a_corrupt_header_in_the_middle(tmp_path: Path) -> None:
    """tarfile stops quietly at a bad header; the reader insists on a proper end."""
    plain = write_tar(tmp_path / "p.tar", _tar_members(("w.bin", b"w" * 100)), mode="w")
    data = bytearray(plain.read_bytes())
    second_header = 512 + 512  # after the handler's header and its one data block
    data[second_header : second_header + 512] = b"\x7f" * 512
    path = tmp_path / "corrupt.tar.gz"
    path.write_bytes(gzip.compress(bytes(data)))
    expect_rejected(tmp_path, path, None, "truncated or corrupt tar data")


def test_gzip_that_is_not_a_tar(tmp_path: Path) -> None:
    path = tmp_path / "plain.tar.gz"
    path.write_bytes(gzip.compress(b"hello " * 1000))
    expect_rejected(tmp_path, path, None, "")


# -- unpacked folders ----------------------------------------------------------------------------


def _model_folder(root: Path) -> Path:
    (root / "MAR-INF").mkdir(parents=True)
    (root / MANIFEST[0]).write_bytes(MANIFEST[1])
    (root / HANDLER[0]).write_bytes(HANDLER[1])
    return root


def test_folder_symlink_pointing_outside(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("token")
    folder = _model_folder(tmp_path / "model")
    (folder / "leak.txt").symlink_to(secret)
    expect_rejected(tmp_path, folder, "leak.txt", "pointing outside")


def test_folder_symlink_to_a_folder(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path / "model")
    (folder / "sub").mkdir()
    (folder / "loop").symlink_to(folder / "sub")
    expect_rejected(tmp_path, folder, "loop", "other than a file")


def test_folder_dangling_symlink(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path / "model")
    (folder / "gone").symlink_to(folder / "missing")
    expect_rejected(tmp_path, folder, "gone", "dangling")


def test_folder_fifo(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path / "model")
    os.mkfifo(folder / "pipe")
    expect_rejected(tmp_path, folder, "pipe", "FIFO")


def test_folder_member_cap(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path / "model")
    (folder / "big.bin").write_bytes(os.urandom(1001))
    expect_rejected(tmp_path, folder, "big.bin", "larger than 1000 bytes", SMALL)


def test_staging_inside_the_source_folder(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path / "model")
    with pytest.raises(ArchiveError, match="inside the model folder"):
        extract_archive(folder, folder / "staging")
    assert not (folder / "staging").exists()
