"""Access-log policy (off, auto, all), line contents, JSON formatting and logging set-up."""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
from collections.abc import Iterator

import pytest

from marserve.observability.access_log import (
    ACCESS_LOGGER,
    LOG_FORMAT_ENV,
    AccessLog,
    JsonFormatter,
    clean,
    configure_logging,
    configure_worker_logging,
    request_id_from,
)

_LOGGER_IDS = itertools.count()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def access(policy: str, clock: Clock | None = None, rate: float = 10.0) -> tuple[AccessLog, Lines]:
    logger = logging.getLogger(f"test.access_log.{next(_LOGGER_IDS)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    lines = Lines()
    logger.addHandler(lines)
    return AccessLog(policy, rate=rate, clock=clock or Clock(), logger=logger), lines


def write(log: AccessLog, path: str = "/predictions/m") -> None:
    if log.admit():
        log.write(method="POST", path=path, status=200, seconds=0.0123, model="m", version="1.0",
                  protocol="torchserve", request_id="r1", client="127.0.0.1:5")  # fmt: skip


def test_auto_writes_at_most_rate_lines_a_second_then_reports_the_skipped() -> None:
    clock = Clock()
    log, lines = access("auto", clock)
    for _ in range(1000):  # a burst at one instant
        write(log)
    assert len(lines.records) == 10
    clock.now += 0.5  # half a second refills five lines
    for _ in range(1000):
        write(log)
    assert len(lines.records) == 15
    assert lines.records[10].access["suppressed"] == 990
    assert "suppressed=990" in lines.records[10].getMessage()
    assert "suppressed" not in lines.records[11].access
    clock.now += 60.0  # a quiet minute never banks more than one second of lines
    for _ in range(100):
        write(log)
    assert len(lines.records) == 25


def test_all_writes_every_line_and_off_none() -> None:
    every, every_lines = access("all")
    none, none_lines = access("off")
    for _ in range(50):
        write(every)
        write(none)
    assert len(every_lines.records) == 50 and none_lines.records == []
    assert not none.enabled and every.enabled


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="off, auto, all"):
        AccessLog("sometimes")


def test_a_line_names_method_path_model_status_latency_and_request_id() -> None:
    log, lines = access("all")
    write(log)
    message = lines.records[0].getMessage()
    assert message == (
        '127.0.0.1:5 "POST /predictions/m" 200 12.3ms model=m version=1.0 '
        "protocol=torchserve request_id=r1"
    )


def test_paths_cannot_forge_lines() -> None:
    assert clean('/a\nb"c\\') == '/a\\x0ab\\"c\\\\'
    assert clean("x" * 300) == "x" * 200 + "..."
    log, lines = access("all")
    write(log, '/predictions/m\r\n127.0.0.1 "GET /admin" 200')
    assert "\n" not in lines.records[0].getMessage() and "\r" not in lines.records[0].getMessage()


@pytest.mark.parametrize(
    ("header", "kept"),
    [("abc-123", True), ("a.b:c_d", True), ("x" * 128, True), ("x" * 129, False),
     ("has space", False), ("new\nline", False), ("", False), (None, False)],
)  # fmt: skip
def test_request_ids_are_kept_only_when_plain(header: str | None, kept: bool) -> None:
    got = request_id_from(header)
    assert (got == header) is kept
    if not kept:
        assert request_id_from(header) != got  # a fresh id each time
        prefix, _, sequence = got.partition("-")
        assert len(prefix) == 16 and int(prefix, 16) >= 0 and int(sequence, 16) > 0


def test_json_formatter_writes_one_object_per_record() -> None:
    formatter = JsonFormatter()
    log, lines = access("all")
    write(log)
    access_doc = json.loads(formatter.format(lines.records[0]))
    assert access_doc["logger"].startswith("test.access_log")
    assert access_doc["level"] == "INFO" and access_doc["status"] == 200
    assert access_doc["latency_ms"] == 12.3 and access_doc["request_id"] == "r1"
    record = logging.LogRecord("marserve.x", logging.WARNING, "f", 1, "hello %s", ("you",), None)
    record.model = "m"
    plain = json.loads(formatter.format(record))
    assert plain["message"] == "hello you" and plain["model"] == "m" and "time" in plain
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        failed = logging.LogRecord("marserve.x", logging.ERROR, "f", 1, "bad", (), sys.exc_info())
    assert "RuntimeError: boom" in json.loads(formatter.format(failed))["exception"]


@pytest.fixture()
def restore_logging() -> Iterator[None]:
    root, access_logger = logging.getLogger(), logging.getLogger(ACCESS_LOGGER)
    saved = (root.handlers[:], root.level, access_logger.handlers[:], access_logger.level,
             access_logger.propagate)  # fmt: skip
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    access_logger.handlers[:], access_logger.level, access_logger.propagate = saved[2:]


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_json_sends_everything_to_stdout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setenv(LOG_FORMAT_ENV, "")
    configure_logging("info", "json")
    assert os.environ[LOG_FORMAT_ENV] == "json"  # for the worker processes started later
    logging.getLogger("marserve.test").info("server line")
    log = AccessLog("all")
    write(log)
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["logger"] for d in docs] == ["marserve.test", ACCESS_LOGGER]
    assert err.getvalue() == ""


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_text_keeps_server_logs_on_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setenv(LOG_FORMAT_ENV, "")
    configure_logging("WARNING", "text")
    logging.getLogger("marserve.test").warning("server line")
    logging.getLogger("marserve.test").info("hidden")
    write(AccessLog("all"))
    assert "WARNING marserve.test: server line" in err.getvalue() and "hidden" not in err.getvalue()
    assert "model=m" in out.getvalue() and "server line" not in out.getvalue()
    with pytest.raises(ValueError, match="text, json"):
        configure_logging("INFO", "xml")


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("log_format", ["json", "text", None])
def test_workers_log_like_their_server(
    monkeypatch: pytest.MonkeyPatch, log_format: str | None
) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    configure_worker_logging("info", log_format)
    logging.getLogger("handler").info("from the handler")
    if log_format == "json":
        doc = json.loads(out.getvalue())
        assert doc["message"] == "from the handler" and doc["pid"] == os.getpid()
        assert err.getvalue() == ""
    else:
        assert f"worker[{os.getpid()}] INFO handler: from the handler" in err.getvalue()
        assert out.getvalue() == ""
