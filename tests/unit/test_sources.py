"""Registration sources: URL checks before any I/O, model names, store-relative paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from marserve.errors import Forbidden, InvalidInput, NotFound
from marserve.repository import ModelStore
from marserve.sources import check_model_name, checked_url, local_archive

ALLOWED = (r"https://models\.example\.com/[a-z]+/[a-z0-9_]+\.mar",)


@pytest.mark.parametrize(
    "url",
    [
        "https://models.example.com/prod/mnist.mar",
        "HTTPS://models.example.com/prod/mnist.mar",  # scheme case is normalised
        "https://MODELS.example.com/prod/mnist.mar",  # so is the host
    ],
)
def test_allowed(url: str) -> None:
    assert checked_url(url, ALLOWED) == "https://models.example.com/prod/mnist.mar"


@pytest.mark.parametrize(
    "url",
    [
        "https://models.example.com@evil.com/prod/mnist.mar",
        "https://user:pw@models.example.com/prod/mnist.mar",
        "https://models.example.com.evil.com/prod/mnist.mar",
        "https://evil.com/?x=https://models.example.com/prod/mnist.mar",
        "https://models.example.com/prod/../mnist.mar",
        "https://models.example.com/prod/%2e%2e/mnist.mar",
        "https://models.example.com\\prod\\mnist.mar",
        "https://models.example.com./prod/mnist.mar",
        "http://models.example.com/prod/mnist.mar",
        "file:///etc/passwd",
        "ftp://models.example.com/prod/mnist.mar",
        "gopher://models.example.com/prod/mnist.mar",
        "jar:https://models.example.com/prod/mnist.mar!/",
        "https://models.example.com/prod/mnist.mar\n",
        "https:///prod/mnist.mar",
    ],
)
def test_refused_before_io(url: str) -> None:
    with pytest.raises(Forbidden):
        checked_url(url, ALLOWED)


def test_nothing_is_allowed_by_default() -> None:
    with pytest.raises(Forbidden, match="allowed_urls"):
        checked_url("https://models.example.com/prod/mnist.mar", ())


@pytest.mark.parametrize("name", ["mnist", "m1", "model..1", "a.b-c_d", "9lives"])
def test_good_model_names(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "..",
        "../x",
        "a/b",
        "model;test",
        "model`x`",
        "model$(id)",
        " ..",
        ".hidden",
        "a" * 300,
        "név",
    ],
)
def test_bad_model_names(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_model_name(name)


def test_local_archives_stay_in_the_store(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    (store_dir / "m.mar").write_bytes(b"x")
    (tmp_path / "outside.mar").write_bytes(b"x")
    store = ModelStore(store_dir)
    assert local_archive("m.mar", store) == (store_dir / "m.mar").resolve()
    for url in (
        "../outside.mar",
        "/etc/passwd",
        str(tmp_path / "outside.mar"),
        "C:x.mar",
        "a/../../outside.mar",
        "~/x.mar",
    ):
        with pytest.raises(InvalidInput):
            local_archive(url, store)
    (store_dir / "link.mar").symlink_to(tmp_path / "outside.mar")
    with pytest.raises(InvalidInput):
        local_archive("link.mar", store)
    with pytest.raises(NotFound):
        local_archive("missing.mar", store)
