"""Token authorization as in TorchServe 0.11+: key_file.json with inference, management, API keys.

Clients send ``Authorization: Bearer <key>``. A missing, malformed, unknown or expired key is 401
with ``WWW-Authenticate: Bearer``; a valid key of the other scope is 403. Keys carry 192 random bits
and are compared in constant time. ``GET /token?type=inference|management`` with the API key rotates
one key.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from marserve.errors import Forbidden, InvalidInput, Unauthenticated

SCOPES = ("inference", "management")
API = "API"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="marserve"'}


def new_key() -> str:
    return secrets.token_urlsafe(24)  # 192 bits


@dataclass(slots=True)
class _Key:
    value: str
    expires_at: float | None  # epoch seconds; None never expires (the API key)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")


class TokenAuthority:
    """Issues, checks and rotates the keys; writes them to ``key_file`` (mode 0600)."""

    def __init__(
        self, key_file: Path, expiration_min: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.key_file = key_file
        self.expiration_s = expiration_min * 60.0
        self._clock = clock
        now = clock()
        self._keys = {scope: _Key(new_key(), now + self.expiration_s) for scope in SCOPES}
        self._keys[API] = _Key(new_key(), None)
        self._write()

    def _write(self) -> None:
        document: dict[str, Any] = {}
        for scope, key in self._keys.items():
            entry: dict[str, str] = {"key": key.value}
            if key.expires_at is not None:
                entry["expiration time"] = _iso(key.expires_at)
            document[scope] = entry
        self.key_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.key_file.with_name(self.key_file.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(document, out, indent=2)
        os.chmod(tmp, 0o600)
        tmp.replace(self.key_file)

    def key(self, scope: str) -> str:
        return self._keys[scope].value

    @staticmethod
    def _bearer(authorization: str | None) -> str:
        if not authorization:
            raise Unauthenticated("Token authorization failed: no Bearer token", headers=_CHALLENGE)
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer" or not token or " " in token:
            raise Unauthenticated(
                "Token authorization failed: expected 'Authorization: Bearer <key>'",
                headers=_CHALLENGE,
            )
        return token

    def _matching(self, token: str) -> str | None:
        """The scope whose key equals ``token``, comparing against every key in constant time."""
        given = token.encode()
        found = None
        for scope, key in self._keys.items():
            if hmac.compare_digest(given, key.value.encode()):
                found = scope
        return found

    def check(self, authorization: str | None, scope: str) -> None:
        token = self._bearer(authorization)
        found = self._matching(token)
        if found is None:
            raise Unauthenticated("Token authorization failed: invalid key", headers=_CHALLENGE)
        if found != scope:
            raise Forbidden(f"Token authorization failed: this key is not valid for {scope}")
        expires_at = self._keys[scope].expires_at
        if expires_at is not None and self._clock() >= expires_at:
            raise Unauthenticated("Token authorization failed: the key expired", headers=_CHALLENGE)

    def rotate(self, authorization: str | None, scope: str) -> dict[str, Any]:
        """Replace one key (``GET /token?type=``); needs the API key."""
        if scope not in SCOPES:
            raise InvalidInput(
                f"Invalid token type {scope[:50]!r}: expected inference or management"
            )
        self.check(authorization, API)
        key = _Key(new_key(), self._clock() + self.expiration_s)
        self._keys[scope] = key
        self._write()
        assert key.expires_at is not None
        return {scope: {"key": key.value, "expiration time": _iso(key.expires_at)}}
