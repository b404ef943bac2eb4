"""The explain benchmark's pure parts: its requests, summaries and the paired-ratio check."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import explain as explain_bench  # noqa: E402
from bench.report import Row  # noqa: E402
from bench.run import parse_args  # noqa: E402

PNG = REPO / "examples" / "mnist" / "test_data" / "0.png"


def rounds(*p50s: float) -> list[dict[str, float]]:
    return [{"p50_ms": value, "mean_ms": value, "p99_ms": value} for value in p50s]


def row(name: str, config: str, p50s: tuple[float, ...]) -> Row:
    return Row(
        name, config, name, 1, p50_ms=sorted(p50s)[len(p50s) // 2], detail={"rounds": rounds(*p50s)}
    )


def test_both_requests_explain_the_same_image_for_class_0_with_50_steps() -> None:
    requests = explain_bench.requests_for(PNG)
    path, body, headers = requests["explain-ts"]
    assert path == "/explanations/mnist?target=0&n_steps=50" and body == PNG.read_bytes()
    path, body, headers = requests["explain-v1"]
    assert path == "/v1/models/mnist:explain" and headers["Content-Type"] == "application/json"
    [instance] = json.loads(body)["instances"]
    assert base64.b64decode(instance["data"]) == PNG.read_bytes()
    assert (instance["target"], instance["n_steps"]) == (0, 50)


def test_summary_percentiles() -> None:
    summary = explain_bench._summary([0.010, 0.020, 0.030, 0.040])
    assert summary["p50_ms"] == 25.0 and summary["mean_ms"] == 25.0 and summary["count"] == 4


def test_the_check_takes_the_median_of_paired_round_ratios() -> None:
    # round 2 was disturbed on both sides: pairing cancels it, unpaired medians would not
    captum = row("explain-captum", "ceiling", (30.0, 90.0, 30.0))
    fast = row("explain-ts", "marserve", (31.5, 99.0, 32.0))
    slow = row("explain-v1", "marserve", (36.0, 95.0, 34.0))
    ts, v1 = explain_bench.checks([captum, fast, slow])
    assert ts.met is True and ts.evidence.startswith("1.067x, median of 3 paired rounds")
    assert v1.met is False and v1.evidence.startswith("1.133x")


def test_without_a_baseline_the_check_is_not_judged() -> None:
    [check] = explain_bench.checks([row("explain-ts", "marserve", (30.0,))])
    assert check.met is None and check.evidence == "row missing"


def test_explain_is_a_bench_section() -> None:
    args = parse_args(["--servers", "explain", "--explain-rounds", "2", "--explain-requests", "9"])
    assert args.servers == ("explain",)
    assert (args.explain_rounds, args.explain_requests) == (2, 9)
