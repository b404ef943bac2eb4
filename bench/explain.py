"""Explain latency: one MNIST image (n_steps=50) through marserve vs Captum called in-process.

Both sides explain ``test_data/0.png`` for class 0 with 50 integration steps, one request at a
time. The in-process side is the bare Captum call on the already-normalised tensor
(``IntegratedGradients(model).attribute(x, target=0, n_steps=50)``), timed in a child Python
with as many torch threads as marserve's single worker gets, so it is the strictest baseline: no
HTTP, no decoding, no JSON. Rounds alternate the two sides so drift hits both; each side reports
the median of its rounds' medians, and the check takes the median of the rounds' paired ratios.

``python -m bench.explain --example-dir examples/mnist --captum --threads 2`` runs one in-process
round and prints one JSON line; the harness calls :func:`run_explain`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from bench.ceiling import load_model, preprocess
from bench.payloads import png_path
from bench.report import Check, Row
from bench.servers import ManagedServer, clean_env, properties_text

N_STEPS = 50
TARGET = 0
FACTOR = 1.1  # the target: explain latency at most 1.1x in-process Captum
LABEL = "explain, 1 image, n_steps=50"
Say = Callable[[str], None]
Request = tuple[str, bytes, dict[str, str]]  # path, body, headers


@dataclass(frozen=True, slots=True)
class ExplainPlan:
    rounds: int = 5
    requests: int = 25  # timed explanations per side and round
    warmup: int = 5


def _summary(latencies_s: list[float]) -> dict[str, float]:
    ordered = np.sort(np.asarray(latencies_s)) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ordered, 50)), 3),
        "p90_ms": round(float(np.percentile(ordered, 90)), 3),
        "p99_ms": round(float(np.percentile(ordered, 99)), 3),
        "mean_ms": round(float(ordered.mean()), 3),
        "count": len(latencies_s),
    }


def captum_round(example_dir: Path, png: Path, count: int, warmup: int, threads: int) -> dict:
    """Time the bare Captum call ``count`` times in this process (torch imported here)."""
    import torch
    from captum.attr import IntegratedGradients

    torch.set_num_threads(threads)
    model = load_model(example_dir)
    inputs = torch.from_numpy(preprocess(png))
    explainer = IntegratedGradients(model)
    for _ in range(warmup):
        explainer.attribute(inputs, target=TARGET, n_steps=N_STEPS)
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        explainer.attribute(inputs, target=TARGET, n_steps=N_STEPS)
        latencies.append(time.perf_counter() - start)
    return {**_summary(latencies), "torch_threads": torch.get_num_threads()}


def _captum_child(repo: Path, example_dir: Path, plan: ExplainPlan, threads: int) -> dict:
    cmd = [sys.executable, "-m", "bench.explain", "--captum", "--example-dir", str(example_dir)]
    cmd += ["--requests", str(plan.requests), "--warmup", str(plan.warmup)]
    cmd += ["--threads", str(threads)]
    proc = subprocess.run(
        cmd, cwd=repo, env=clean_env(), capture_output=True, text=True, timeout=600, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(" ".join(proc.stderr.strip().splitlines()[-1:]) or "captum failed")
    result: dict = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def requests_for(png: Path) -> dict[str, Request]:
    """The explain requests per row: (path, body, headers), all for class 0 and 50 steps."""
    image = png.read_bytes()
    instance = {"data": base64.b64encode(image).decode(), "target": TARGET, "n_steps": N_STEPS}
    v1 = json.dumps({"instances": [instance]}).encode()
    ts_path = f"/explanations/mnist?target={TARGET}&n_steps={N_STEPS}"
    return {
        "explain-ts": (ts_path, image, {"Content-Type": "application/octet-stream"}),
        "explain-v1": ("/v1/models/mnist:explain", v1, {"Content-Type": "application/json"}),
    }


def http_round(base_url: str, request: Request, plan: ExplainPlan) -> dict:
    """Time ``plan.requests`` sequential explanations over one keep-alive connection."""
    path, body, headers = request
    latencies = []
    with httpx.Client(base_url=base_url, timeout=60.0) as client:
        for index in range(plan.warmup + plan.requests):
            start = time.perf_counter()
            response = client.post(path, content=body, headers=headers)
            elapsed = time.perf_counter() - start
            if response.status_code != 200:
                raise RuntimeError(f"{path}: HTTP {response.status_code} {response.text[:200]}")
            if index >= plan.warmup:
                latencies.append(elapsed)
    return _summary(latencies)


def _median_of(rounds: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in rounds), 3)


def _row(server: str, config: str, row: str, rounds: list[dict], note: str) -> Row:
    p50 = _median_of(rounds, "p50_ms")
    return Row(
        server,
        config,
        row,
        1,
        req_per_s=round(1000.0 / _median_of(rounds, "mean_ms"), 2),
        p50_ms=p50,
        p99_ms=_median_of(rounds, "p99_ms"),
        errors=0,
        note=note,
        detail={"rounds": rounds},
    )


def explain_server(make: Callable[[Path], ManagedServer], cache: Path) -> ManagedServer:
    """marserve with one worker for the model, so its worker gets every core's thread."""
    run_dir = cache / "runs" / "marserve-explain"
    run_dir.mkdir(parents=True, exist_ok=True)
    server = make(run_dir)
    extra = {"default_workers_per_model": "1"}
    (run_dir / "config.properties").write_text(properties_text(server.ports, extra))
    return server


def run_explain(
    repo: Path,
    example_dir: Path,
    make: Callable[[Path], ManagedServer],
    cache: Path,
    plan: ExplainPlan,
    say: Say,
) -> list[Row]:
    """Alternate Captum-in-process and marserve rounds; one row per side and request kind."""
    png = png_path(example_dir)
    threads = os.cpu_count() or 1
    requests = requests_for(png)
    server = explain_server(make, cache)
    captum: list[dict] = []
    served: dict[str, list[dict]] = {name: [] for name in requests}
    server.start()
    try:
        _wait_explains(server, requests["explain-ts"])
        for number in range(plan.rounds):
            say(f"  explain round {number + 1}/{plan.rounds}")
            captum.append(_captum_child(repo, example_dir, plan, threads))
            for name, request in requests.items():
                served[name].append(http_round(server.base_url, request, plan))
    finally:
        server.stop()
    note = f"{threads} torch threads in both"
    rows = [_row("Captum in-process", "ceiling", "explain-captum", captum, note)]
    rows += [_row("marserve", "marserve", name, served[name], note) for name in requests]
    return rows


def _wait_explains(server: ManagedServer, request: Request) -> None:
    deadline = time.monotonic() + 120.0
    path, body, headers = request
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        while time.monotonic() < deadline:
            try:
                if client.post(path, content=body, headers=headers).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            reason = server.early_exit()
            if reason is not None:
                raise RuntimeError(f"marserve {reason}: {server.log_tail()}")
            time.sleep(0.1)
    raise RuntimeError(f"marserve did not explain within 120 s: {server.log_tail()}")


def paired_ratio(served: Row, baseline: Row) -> float | None:
    """The median over rounds of served p50 / in-process p50 (each round's pair ran back to
    back, so slow drift on a shared machine cancels out)."""
    ours, theirs = served.detail.get("rounds", []), baseline.detail.get("rounds", [])
    ratios = [
        a["p50_ms"] / b["p50_ms"] for a, b in zip(ours, theirs, strict=True) if b.get("p50_ms")
    ]
    return statistics.median(ratios) if ratios else None


def checks(rows: list[Row]) -> list[Check]:
    """Each marserve explain row against Captum in-process: the median paired p50 ratio."""
    baseline = next((r for r in rows if r.row == "explain-captum" and r.p50_ms), None)
    out = []
    for row in (r for r in rows if r.config == "marserve" and r.row.startswith("explain-")):
        label = f"{row.row} ({LABEL}): p50 <= {FACTOR}x in-process Captum"
        ratio = None if baseline is None else paired_ratio(row, baseline)
        if baseline is None or ratio is None:
            out.append(Check(label, None, "row missing"))
            continue
        evidence = f"{ratio:.3f}x, median of {len(row.detail['rounds'])} paired rounds "
        evidence += f"(p50 {row.p50_ms:.2f} vs {baseline.p50_ms:.2f} ms)"
        out.append(Check(label, ratio <= FACTOR, evidence))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--example-dir", type=Path, required=True)
    parser.add_argument("--captum", action="store_true", help="one in-process round, as JSON")
    parser.add_argument("--requests", type=int, default=ExplainPlan.requests)
    parser.add_argument("--warmup", type=int, default=ExplainPlan.warmup)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if not args.captum:
        parser.error("run the explain benchmark through bench/run.py (--servers explain)")
    png = png_path(args.example_dir)
    print(json.dumps(captum_round(args.example_dir, png, args.requests, args.warmup, args.threads)))


if __name__ == "__main__":
    main()
