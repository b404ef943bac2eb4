"""Access log lines (logger ``marserve.access``, to stdout) and the process's log format.

Policy (``marserve serve --access-log``):

- ``auto`` (default): at most ``rate`` lines a second (10), so a server under load writes a few
  kilobytes a minute instead of TorchServe's tens of megabytes; the next line written after a
  quiet spell says how many were skipped (``suppressed=N``).
- ``all``: one line per request. ``off``: none.

``--log-format json`` turns every log record (server, access, worker processes and their
handlers) into one JSON object per line on stdout; ``text`` (default) keeps server and worker logs
on stderr and writes access lines as plain text.
Paths are cut to 200 characters and control characters escaped, so a request cannot forge log
lines; a request id comes from a well-formed ``X-Request-Id`` header or is generated.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import orjson

from marserve.ids import new_request_id

ACCESS_LOGGER = "marserve.access"
LOG_FORMAT_ENV = "MARSERVE_LOG_FORMAT"  # set by the server so that its workers log alike
POLICIES = ("off", "auto", "all")
LOG_FORMATS = ("text", "json")
DEFAULT_RATE = 10.0
MAX_PATH = 200
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}\Z")
_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F)} | {ord('"'): '\\"', ord("\\"): "\\\\"}
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# LogRecord attributes that are not a record's own extra fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def clean(text: str, limit: int = MAX_PATH) -> str:
    """``text`` cut to ``limit`` characters with quotes and control characters escaped."""
    cut = text[:limit] + ("..." if len(text) > limit else "")
    return cut.translate(_ESCAPES)


def request_id_from(header: str | None) -> str:
    """The client's ``X-Request-Id`` when it is a plain token, else a new one."""
    if header and _REQUEST_ID.match(header):
        return header
    return new_request_id()


class AccessLog:
    """Decides which requests get a line, and writes it through ``logging``."""

    def __init__(
        self,
        policy: str = "auto",
        *,
        rate: float = DEFAULT_RATE,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"access log policy must be one of {', '.join(POLICIES)}")
        self.policy = policy
        self.rate = rate
        self._clock = clock
        self._tokens = rate
        self._last = clock()
        self.suppressed = 0
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)

    @property
    def enabled(self) -> bool:
        return self.policy != "off"

    def admit(self) -> bool:
        """Whether this request gets a line (counts the ones that do not)."""
        if self.policy == "all":
            return True
        if self.policy == "off":
            return False
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.suppressed += 1
        return False

    def write(
        self,
        *,
        method: str,
        path: str,
        status: int,
        seconds: float,
        client: str = "-",
        model: str = "",
        version: str = "",
        protocol: str = "",
        request_id: str = "",
    ) -> None:
        """One line; call only after :meth:`admit` said yes."""
        fields: dict[str, Any] = {
            "client": client,
            "method": clean(method, 16),
            "path": clean(path),
            "status": status,
            "latency_ms": round(seconds * 1000.0, 3),
            "model": model or "-",
            "version": version or "-",
            "protocol": protocol or "-",
            "request_id": request_id or "-",
        }
        if self.suppressed:
            fields["suppressed"] = self.suppressed
            self.suppressed = 0
        text = (
            f'{fields["client"]} "{fields["method"]} {fields["path"]}" {status} '
            f"{fields['latency_ms']}ms model={fields['model']} version={fields['version']} "
            f"protocol={fields['protocol']} request_id={fields['request_id']}"
        )
        if "suppressed" in fields:
            text += f" suppressed={fields['suppressed']}"
        self.logger.info(text, extra={"access": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            document.update(access)
        else:
            document["message"] = record.getMessage()
            for key, value in vars(record).items():
                if key not in _STANDARD and not key.startswith("_"):
                    document[key] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


def configure_logging(level: str = "WARNING", log_format: str = "text") -> None:
    """Root handler (stderr text or stdout JSON) and the access logger (stdout, not propagated)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    as_json = log_format == "json"
    root_handler = logging.StreamHandler(sys.stdout if as_json else sys.stderr)
    root_handler.setFormatter(JsonFormatter() if as_json else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [root_handler]
    root.setLevel(level.upper())
    access_handler = logging.StreamHandler(sys.stdout)
    access_handler.setFormatter(
        JsonFormatter() if as_json else logging.Formatter("%(asctime)s %(message)s")
    )
    access = logging.getLogger(ACCESS_LOGGER)
    access.handlers[:] = [access_handler]
    access.setLevel(logging.INFO)
    access.propagate = False
    os.environ[LOG_FORMAT_ENV] = log_format  # worker processes inherit it


def configure_worker_logging(level: str, log_format: str | None) -> None:
    """A worker's logging: JSON on stdout when its server logs JSON, else text on stderr."""
    handler: logging.Handler
    if log_format == "json":
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s worker[{os.getpid()}] %(levelname)s %(name)s: %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
