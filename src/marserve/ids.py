"""Request ids: unique within and across server runs, and cheap enough for every request."""

from __future__ import annotations

import itertools
import secrets

_RUN = secrets.token_hex(8)  # 64 random bits per process
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """``<random run prefix>-<sequence>``: no syscall or UUID object per request."""
    return f"{_RUN}-{next(_COUNTER):012x}"
