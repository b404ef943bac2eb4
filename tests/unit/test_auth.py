"""TokenAuthority: scopes, malformed headers, expiry and rotation, with an injected clock."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from marserve.auth import TokenAuthority
from marserve.errors import Forbidden, InvalidInput, Unauthenticated


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def authority(tmp_path: Path, clock: Clock) -> TokenAuthority:
    return TokenAuthority(tmp_path / "key_file.json", expiration_min=60, clock=clock)


def bearer(authority: TokenAuthority, scope: str) -> str:
    return f"Bearer {authority.key(scope)}"


def test_key_file_layout_and_mode(authority: TokenAuthority) -> None:
    document = json.loads(authority.key_file.read_text())
    assert set(document) == {"management", "inference", "API"}
    assert document["inference"]["expiration time"].endswith("Z")
    assert "expiration time" not in document["API"]
    assert stat.S_IMODE(authority.key_file.stat().st_mode) == 0o600
    assert len({document[s]["key"] for s in document}) == 3


def test_each_scope_accepts_its_own_key(authority: TokenAuthority) -> None:
    authority.check(bearer(authority, "inference"), "inference")
    authority.check(bearer(authority, "management"), "management")


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (None, Unauthenticated),
        ("", Unauthenticated),
        ("Basic abc", Unauthenticated),
        ("Bearer", Unauthenticated),
        ("Bearer nope", Unauthenticated),
        ("bearer {inference}", Unauthenticated),
        ("Bearer {inference} {inference}", Unauthenticated),
        ("Bearer {management}", Forbidden),
        ("Bearer {API}", Forbidden),
    ],
)
def test_refusals(authority: TokenAuthority, header: str | None, error: type[Exception]) -> None:
    if header is not None:
        header = header.format(**{s: authority.key(s) for s in ("inference", "management", "API")})
    with pytest.raises(error) as caught:
        authority.check(header, "inference")
    if error is Unauthenticated:
        assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")  # type: ignore[attr-defined]


def test_keys_expire(authority: TokenAuthority, clock: Clock) -> None:
    header = bearer(authority, "inference")
    clock.now += 59 * 60
    authority.check(header, "inference")
    clock.now += 61
    with pytest.raises(Unauthenticated, match="expired"):
        authority.check(header, "inference")


def test_fractional_expiry_as_torchserves_test_config(tmp_path: Path, clock: Clock) -> None:
    quarter = TokenAuthority(tmp_path / "key_file.json", expiration_min=0.25, clock=clock)
    header = bearer(quarter, "inference")
    clock.now += 14.5
    quarter.check(header, "inference")
    clock.now += 1
    with pytest.raises(Unauthenticated, match="expired"):
        quarter.check(header, "inference")


def test_rotation_needs_the_api_key_and_replaces_one_key(authority: TokenAuthority) -> None:
    old = bearer(authority, "management")
    with pytest.raises(Forbidden):
        authority.rotate(old, "management")
    answer = authority.rotate(bearer(authority, "API"), "management")
    new_key = answer["management"]["key"]
    assert new_key != old.split()[1]
    with pytest.raises(Unauthenticated):
        authority.check(old, "management")
    authority.check(f"Bearer {new_key}", "management")
    assert json.loads(authority.key_file.read_text())["management"]["key"] == new_key
    with pytest.raises(InvalidInput):
        authority.rotate(bearer(authority, "API"), "API")
