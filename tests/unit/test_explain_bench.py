"""The explain benchmark's pure parts: its requests, rows and the paired-ratio check."""

from __future__ import annotations

import base64
import json
import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import explain as explain_bench  # noqa: E402
from bench.run import parse_args  # noqa: E402

PNG = REPO / "examples" / "mnist" / "test_data" / "0.png"


def test_both_requests_explain_the_same_image_for_class_0_with_50_steps() -> None:
    requests = explain_bench.requests_for(PNG)
    path, body, headers = requests["explain-ts"]
    assert path == "/explanations/mnist?target=0&n_steps=50" and body == PNG.read_bytes()
    path, body, headers = requests["explain-v1"]
    assert path == "/v1/models/mnist:explain" and headers["Content-Type"] == "application/json"
    [instance] = json.loads(body)["instances"]
    assert base64.b64decode(instance["data"]) == PNG.read_bytes()
    assert (instance["target"], instance["n_steps"]) == (0, 50)


def test_the_client_sends_without_waiting_for_acks() -> None:
    with explain_bench.no_delay_client("http://127.0.0.1:9") as client:
        options = client._transport._pool._socket_options  # httpcore's connection options
    assert (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1) in options


def test_rows_and_checks_judge_the_median_of_paired_ratios() -> None:
    # the second trio was disturbed for every side: pairing cancels it
    runs = {
        "plain": {
            "explain-captum": [30.0, 90.0, 30.0],
            "explain-ts": [31.5, 99.0, 32.0],
            "explain-v1": [36.0, 95.0, 34.0],
        },
        "worker-malloc": {
            "explain-captum-malloc": [28.0, 28.0, 29.0],
            "explain-ts": [30.8, 30.0, 31.0],
            "explain-v1": [30.0, 30.8, 33.0],
        },
    }
    rows = explain_bench.rows_from(runs, threads=2)
    assert [row.row for row in rows] == [
        "explain-captum",
        "explain-captum-malloc",
        "explain-ts",
        "explain-v1",
    ]
    assert rows[0].config == rows[1].config == "ceiling"
    assert rows[2].config == rows[3].config == "marserve"
    ts_row = rows[2]
    assert ts_row.p50_ms == 31.25 and ts_row.detail["latency"]["count"] == 6  # both runs' calls
    assert ts_row.detail["paired_ratio_median"] == 1.0667  # against plain Captum only
    assert ts_row.detail["paired_ratio_median_vs_malloc"] == 1.0714
    ts, v1 = explain_bench.checks(rows)
    assert ts.met is True and ts.evidence.startswith("1.067x, median of 3 interleaved pairs")
    assert "1.071x Captum with the worker's malloc settings" in ts.evidence
    assert v1.met is False and v1.evidence.startswith("1.133x")


def test_without_the_malloc_baseline_only_the_plain_ratio_is_reported() -> None:
    times = {side: [30.0] for side in ("explain-captum", *explain_bench.SERVED)}
    rows = explain_bench.rows_from({"plain": times}, threads=2)
    assert [row.row for row in rows] == ["explain-captum", "explain-ts", "explain-v1"]
    ts, _ = explain_bench.checks(rows)
    assert ts.met is True and "malloc" not in ts.evidence


def test_without_a_baseline_the_check_is_not_judged() -> None:
    times = {side: [30.0] for side in ("explain-captum", *explain_bench.SERVED)}
    rows = explain_bench.rows_from({"plain": times}, threads=2)
    [check, _] = explain_bench.checks(rows[1:])
    assert check.met is None and check.evidence == "row missing"


def test_the_pause_outlasts_libgomp_idle_spin() -> None:
    # an OpenMP thread spins about 10 ms after a parallel region: the next side must not pay it
    assert explain_bench.PAUSE_S >= 0.02


def test_explain_is_a_bench_section() -> None:
    args = parse_args(["--servers", "explain", "--explain-rounds", "2", "--explain-requests", "9"])
    assert args.servers == ("explain",)
    assert (args.explain_rounds, args.explain_requests) == (2, 9)
    assert parse_args([]).explain_rounds == explain_bench.ExplainPlan().rounds == 5
