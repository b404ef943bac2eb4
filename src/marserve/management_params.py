"""The management API's parameters as TorchServe reads them: lenient numbers, its defaults.

TorchServe parses each number with Java's ``Integer.parseInt`` and falls back to the default
when that fails (``batch_size=dd`` is the default batch size), reads booleans with
``Boolean.parseBoolean`` (only ``true``, in any case, is true: ``synchronous=-1`` is false),
starts no workers on registration unless asked (``initial_workers``, or the server's
``default_workers_per_model``), and pages lists with ``limit`` in 0..100 (else 100) and
``next_page_token`` >= 0 (else 0). marserve does the same; the few values it refuses instead
are listed in the README's compatibility section.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from marserve.errors import InvalidInput

_INT = re.compile(r"[+-]?[0-9]{1,10}")
_INT_MAX = (1 << 31) - 1
#: TorchServe's Python runtimes (its ``Manifest.RuntimeType`` values that run a handler).
PYTHON_RUNTIMES = frozenset({"python", "python2", "python3"})
MAX_PAGE = 100


def ts_int(value: str | None) -> int | None:
    """``Integer.parseInt``: an int32, or None (the caller's default) when absent or malformed."""
    if value is None or not _INT.fullmatch(value):
        return None
    number = int(value)
    return number if -_INT_MAX - 1 <= number <= _INT_MAX else None


def ts_bool(value: str | None, default: bool) -> bool:
    """``Boolean.parseBoolean`` with a default for an absent value."""
    return default if value is None else value.lower() == "true"


def positive(value: int | None) -> int | None:
    """A value that only means something above 0 (TorchServe's -1 stands for "the default")."""
    return value if value is not None and value > 0 else None


def paging(limit: int | None, token: int | None) -> tuple[int, int]:
    """TorchServe's list paging: ``limit`` outside 0..100 is 100, a negative token is 0."""
    size = MAX_PAGE if limit is None or not 0 <= limit <= MAX_PAGE else limit
    return size, max(0, token or 0)


def check_runtime(runtime: str | None) -> None:
    if runtime is not None and runtime.lower() not in PYTHON_RUNTIMES:
        raise InvalidInput(
            f"Invalid RuntimeType value: {runtime[:50]}; marserve runs "
            f"{', '.join(sorted(PYTHON_RUNTIMES))}"
        )


@dataclass(frozen=True, slots=True)
class Registration:
    """``POST /models``: everything TorchServe documents for it (``None``: not given)."""

    url: str
    model_name: str | None = None
    handler: str | None = None
    runtime: str | None = None
    batch_size: int | None = None
    max_batch_delay: int | None = None
    initial_workers: int | None = None
    response_timeout: int | None = None
    startup_timeout: int | None = None
    synchronous: bool = True
    s3_sse_kms: bool = False  # accepted: S3 decrypts SSE-KMS objects on read, nothing to do

    def overrides(self) -> dict[str, int | None]:
        """The model settings this registration asks for, under TorchServe's query names."""
        workers = self.initial_workers
        return {
            "batch_size": positive(self.batch_size),
            "max_batch_delay": self.max_batch_delay
            if self.max_batch_delay is not None and self.max_batch_delay >= 0
            else None,
            "initial_workers": None if workers is None else max(0, workers),
            "response_timeout": positive(self.response_timeout),
            "startup_timeout": positive(self.startup_timeout),
        }
