"""Explain latency: one MNIST image (n_steps=50) through marserve vs Captum called in-process.

Every side explains ``test_data/0.png`` for class 0 with 50 integration steps, one at a time:

- ``explain-captum``: the bare Captum call on the already-normalised tensor
  (``IntegratedGradients(model).attribute(x, target=0, n_steps=50)``) in a plain Python process
  with as many torch threads as marserve's single worker gets: the issue's baseline (no HTTP,
  no decoding, no JSON);
- ``explain-captum-malloc``: the same call in a process that first applies the malloc settings
  marserve's workers give themselves (:mod:`marserve.workers.tuning`). A worker runs Captum
  faster than a plain process mostly because of them; this row shows what the served path costs
  once that advantage is taken away;
- ``explain-ts``: ``POST /explanations/mnist?target=0&n_steps=50`` with the PNG as the body;
- ``explain-v1``: ``POST /v1/models/mnist:explain`` with the image as a base64 instance.

Each round runs two child Pythons (torch stays out of the harness), one per baseline; each
interleaves its Captum call and the two requests, rotating their order, with a pause before
each call longer than libgomp's idle spin (about 10 ms), so no side runs while the previous
one's OpenMP threads still burn a core. On a shared machine each trio sees the same load, so a
check judges the median of the per-trio ratios marserve / Captum. The HTTP client sets
TCP_NODELAY: without it a POST's body waits for the server's delayed ACK (tens of ms) and
measures the client, not the server.

``python -m bench.explain --example-dir examples/mnist --url http://127.0.0.1:8080`` runs one
child against a running server and prints one JSON line; the harness calls :func:`run_explain`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.ceiling import load_model, preprocess
from bench.payloads import png_path
from bench.report import Check, Row
from bench.servers import ManagedServer, clean_env, properties_text
from marserve.workers import tuning

N_STEPS = 50
TARGET = 0
FACTOR = 1.1  # the target: explain latency at most 1.1x in-process Captum
LABEL = "explain, 1 image, n_steps=50"
BASELINES = {"plain": "explain-captum", "worker-malloc": "explain-captum-malloc"}
SERVED = ("explain-ts", "explain-v1")
PAUSE_S = 0.025  # longer than libgomp's idle spin after a parallel region
Say = Callable[[str], None]
Request = tuple[str, bytes, dict[str, str]]  # path, body, headers


@dataclass(frozen=True, slots=True)
class ExplainPlan:
    rounds: int = 5  # each runs one fresh client process per baseline
    requests: int = 30  # timed trios per client process
    warmup: int = 5


def _summary(latencies_ms: list[float]) -> dict[str, float]:
    ordered = np.sort(np.asarray(latencies_ms))
    return {
        "p50_ms": round(float(np.percentile(ordered, 50)), 3),
        "p90_ms": round(float(np.percentile(ordered, 90)), 3),
        "p99_ms": round(float(np.percentile(ordered, 99)), 3),
        "mean_ms": round(float(ordered.mean()), 3),
        "count": len(latencies_ms),
    }


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


def no_delay_client(base_url: str) -> httpx.Client:
    """A keep-alive client whose socket sends small writes at once (TCP_NODELAY)."""
    option = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = httpx.HTTPTransport(socket_options=[option])
    return httpx.Client(base_url=base_url, timeout=60.0, transport=transport)


def interleaved(
    example_dir: Path, url: str, count: int, warmup: int, threads: int, baseline: str = "plain"
) -> dict:
    """Time ``count`` trios (Captum in this process, then each explain request) in rotation.

    ``baseline`` "worker-malloc" first gives this process the malloc settings of marserve's
    workers; the Captum side's name says which baseline it is.
    """
    if baseline == "worker-malloc" and not tuning.keep_freed_memory(os.environ):
        raise RuntimeError("the worker's malloc settings do not apply here (not glibc?)")
    import torch
    from captum.attr import IntegratedGradients

    torch.set_num_threads(threads)
    inputs = torch.from_numpy(preprocess(png_path(example_dir)))
    explainer = IntegratedGradients(load_model(example_dir))
    requests = requests_for(png_path(example_dir))
    captum = BASELINES[baseline]
    with no_delay_client(url) as client:

        def post(request: Request) -> None:
            response = client.post(request[0], content=request[1], headers=request[2])
            if response.status_code != 200:
                raise RuntimeError(f"{request[0]}: HTTP {response.status_code}")

        calls: dict[str, Callable[[], Any]] = {
            captum: lambda: explainer.attribute(inputs, target=TARGET, n_steps=N_STEPS),
            "explain-ts": lambda: post(requests["explain-ts"]),
            "explain-v1": lambda: post(requests["explain-v1"]),
        }
        order = list(calls)
        times: dict[str, list[float]] = {side: [] for side in order}
        for index in range(warmup + count):
            for side in order[index % 3 :] + order[: index % 3]:
                time.sleep(PAUSE_S)
                start = time.perf_counter()
                calls[side]()
                if index >= warmup:
                    times[side].append((time.perf_counter() - start) * 1e3)
    return {"times_ms": times, "torch_threads": torch.get_num_threads(), "baseline": baseline}


def _child(
    repo: Path, example_dir: Path, url: str, plan: ExplainPlan, threads: int, baseline: str
) -> dict:
    cmd = [sys.executable, "-m", "bench.explain", "--example-dir", str(example_dir), "--url", url]
    cmd += ["--requests", str(plan.requests), "--warmup", str(plan.warmup)]
    cmd += ["--threads", str(threads), "--baseline", baseline]
    proc = subprocess.run(
        cmd, cwd=repo, env=clean_env(), capture_output=True, text=True, timeout=600, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(" ".join(proc.stderr.strip().splitlines()[-1:]) or "child failed")
    result: dict = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# per baseline: the times of each side in that baseline's child runs
Runs = dict[str, dict[str, list[float]]]


def paired_ratios(times: dict[str, list[float]], side: str, baseline: str = "plain") -> list[float]:
    """Per trio of one baseline's runs: that side's latency over Captum's in the same trio."""
    reference = times[BASELINES[baseline]]
    return [ours / theirs for ours, theirs in zip(times[side], reference, strict=True) if theirs]


def rows_from(runs: Runs, threads: int) -> list[Row]:
    """A row per Captum baseline run and per endpoint (over every run). An endpoint's
    ``detail`` carries the median paired ratio against each baseline that ran."""
    rows = []
    note = f"{threads} torch threads each"
    for baseline, captum in BASELINES.items():
        if baseline in runs:
            rows.append(_row("Captum in-process", "ceiling", captum, runs[baseline][captum], note))
    for side in SERVED:
        latencies = [value for times in runs.values() for value in times[side]]
        row = _row("marserve", "marserve", side, latencies, note)
        for baseline, times in runs.items():
            ratios = paired_ratios(times, side, baseline)
            suffix = "" if baseline == "plain" else "_vs_malloc"
            row.detail[f"paired_ratio_median{suffix}"] = round(statistics.median(ratios), 4)
            row.detail[f"paired_ratio_p90{suffix}"] = round(float(np.percentile(ratios, 90)), 4)
        rows.append(row)
    return rows


def _row(server: str, config: str, side: str, latencies: list[float], note: str) -> Row:
    summary = _summary(latencies)
    return Row(
        server,
        config,
        side,
        1,
        req_per_s=round(1000.0 / summary["mean_ms"], 2),
        p50_ms=summary["p50_ms"],
        p99_ms=summary["p99_ms"],
        errors=0,
        note=f"{note}, {summary['count']} interleaved calls",
        detail={"latency": summary},
    )


def explain_server(make: Callable[[Path], ManagedServer], cache: Path) -> ManagedServer:
    """marserve with one worker for the model, so its worker gets every core's thread."""
    run_dir = cache / "runs" / "marserve-explain"
    run_dir.mkdir(parents=True, exist_ok=True)
    server = make(run_dir)
    extra = {"default_workers_per_model": "1"}
    (run_dir / "config.properties").write_text(properties_text(server.ports, extra))
    return server


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


def run_explain(
    repo: Path,
    example_dir: Path,
    make: Callable[[Path], ManagedServer],
    cache: Path,
    plan: ExplainPlan,
    say: Say,
) -> list[Row]:
    """Start marserve (one worker); each round runs one interleaving child per baseline."""
    threads = os.cpu_count() or 1
    server = explain_server(make, cache)
    runs: Runs = {}
    server.start()
    try:
        _wait_explains(server, requests_for(png_path(example_dir))["explain-ts"])
        for number in range(plan.rounds):
            say(f"  explain round {number + 1}/{plan.rounds}")
            for baseline in BASELINES:
                result = _child(repo, example_dir, server.base_url, plan, threads, baseline)
                times = runs.setdefault(baseline, {})
                for side, values in result["times_ms"].items():
                    times.setdefault(side, []).extend(values)
    finally:
        server.stop()
    return rows_from(runs, threads)


def checks(rows: list[Row]) -> list[Check]:
    """Each endpoint: the median over trios of its latency / plain in-process Captum's (the
    issue's target); the evidence adds the ratio against Captum with the worker's malloc."""
    baseline = next((r for r in rows if r.row == BASELINES["plain"] and r.p50_ms), None)
    out = []
    for row in (r for r in rows if r.config == "marserve" and r.row in SERVED):
        label = f"{row.row} ({LABEL}): <= {FACTOR}x in-process Captum"
        ratio = row.detail.get("paired_ratio_median")
        if baseline is None or ratio is None:
            out.append(Check(label, None, "row missing"))
            continue
        count = baseline.detail.get("latency", {}).get("count", "?")
        evidence = f"{ratio:.3f}x, median of {count} interleaved pairs (p50 {row.p50_ms:.2f} ms)"
        malloc = row.detail.get("paired_ratio_median_vs_malloc")
        if malloc is not None:
            evidence += f"; {malloc:.3f}x Captum with the worker's malloc settings"
        out.append(Check(label, ratio <= FACTOR, evidence))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--example-dir", type=Path, required=True)
    parser.add_argument("--url", required=True, help="a running marserve serving mnist")
    parser.add_argument("--requests", type=int, default=ExplainPlan().requests)
    parser.add_argument("--warmup", type=int, default=ExplainPlan().warmup)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--baseline", choices=sorted(BASELINES), default="plain")
    args = parser.parse_args()
    result = interleaved(
        args.example_dir, args.url, args.requests, args.warmup, args.threads, args.baseline
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
