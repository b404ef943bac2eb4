"""The benchmark plan and its execution: one server at a time, each load point, the ceiling."""

from __future__ import annotations

import functools
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

from bench import grpc_load, loadgen, procs
from bench.payloads import Payload, png_path
from bench.report import MIB, NOISY_PCT, Row
from bench.servers import ManagedServer, ServerNotReady, clean_env, probe, wait_first_prediction

SERVER_CONFIGS = ("torchserve", "torchserve-1thread", "torchserve-tuned", "marserve")
ROWS = ("png", "v1", "v2-json", "v2-binary", "grpc-raw")
LABELS = {
    "torchserve": "TorchServe 0.12 default",
    "torchserve-1thread": "TorchServe 0.12 1 thread/worker",
    "torchserve-tuned": "TorchServe 0.12 tuned",  # 1 thread/worker, quiet log4j2, same batching
    "marserve": "marserve",
    "ceiling": "model only, in-process",
}

Say = Callable[[str], None]
ServerFactory = Callable[[], ManagedServer]
Runner = Callable[[int, float], loadgen.LoadResult]  # (concurrency, seconds) -> one load


@dataclass(frozen=True, slots=True)
class Plan:
    """What to measure and for how long."""

    duration_s: float = 15.0
    warmup_s: float = 5.0
    concurrency: tuple[int, ...] = (1, 8, 32)
    servers: tuple[str, ...] = SERVER_CONFIGS
    rows: tuple[str, ...] = ROWS
    extra_concurrency: int = 8
    thread_compare_concurrency: int = 32
    ceiling_s: float = 5.0
    ready_timeout_s: float = 120.0
    quiet_wait_s: float = 30.0  # longest wait for other work on the machine to calm down
    quiet_threshold_pct: float = 15.0
    noisy_retries: int = 2  # extra tries for a point that other processes disturbed
    cold_starts: int = 3  # the median is reported


def wait_quiet(plan: Plan, say: Say) -> float:
    """Before a measurement, give other work on this (possibly shared) machine time to finish."""
    if plan.quiet_wait_s <= 0:
        return 0.0
    cpus = os.cpu_count() or 1
    busy = procs.wait_quiet(plan.quiet_wait_s, plan.quiet_threshold_pct, cpus)
    if busy >= plan.quiet_threshold_pct:
        say(f"  machine still {busy:.0f}% busy after {plan.quiet_wait_s:g} s: measuring anyway")
    return busy


def points(plan: Plan, config: str) -> list[tuple[str, int]]:
    """The (row, concurrency) load points one server configuration runs, in order.

    TorchServe only gets PNG rows (its own API); the one-thread TorchServe only the comparison
    concurrency; marserve gets PNG at every concurrency plus the protocol rows at one level.
    """
    png = "png" in plan.rows
    if config == "torchserve":
        return [("png", c) for c in plan.concurrency] if png else []
    if config == "torchserve-1thread":
        return [("png", plan.thread_compare_concurrency)] if png else []
    if config == "torchserve-tuned":  # the anchor: the concurrencies the targets name
        return [("png", c) for c in plan.concurrency if c in (8, 32)] if png else []
    if config == "marserve":
        out = [("png", c) for c in plan.concurrency] if png else []
        return out + [(row, plan.extra_concurrency) for row in plan.rows if row != "png"]
    raise ValueError(f"unknown server configuration {config!r}")


def _row(config: str, row: str, concurrency: int | None, **values: object) -> Row:
    return Row(LABELS[config], config, row, concurrency, **values)  # type: ignore[arg-type]


def _body_file(cache: Path, payload: Payload) -> Path:
    body = cache / "bodies" / f"{payload.row}.bin"
    body.parent.mkdir(parents=True, exist_ok=True)
    body.write_bytes(payload.body)
    return body


def _script(cache: Path, payload: Payload) -> Path:
    script = cache / "bodies" / f"{payload.row}.lua"
    script.write_text(loadgen.lua_script(_body_file(cache, payload), payload.headers))
    return script


def is_grpc(payload: Payload) -> bool:
    """gRPC rows (``grpc-*``): ``path`` is the method, ``body`` the serialized request."""
    return payload.row.startswith("grpc")


def load_runner(server: ManagedServer, payload: Payload, cache: Path) -> tuple[Runner | None, str]:
    """Check one request works; (how to load it, a sample answer) or (None, why it failed)."""
    if is_grpc(payload):
        target = f"127.0.0.1:{server.ports.grpc_inference}"
        ok, sample = grpc_load.probe(target, payload.path, payload.body)
        if not ok:
            return None, f"gRPC {sample}"
        body = _body_file(cache, payload)
        return functools.partial(grpc_load.run_load, target, payload.path, body), sample
    with httpx.Client(timeout=30.0) as client:
        answer = probe(client, server.base_url, payload)
    sample = answer.text[:120]
    if not answer.is_success:
        return None, f"HTTP {answer.status_code} {sample}"
    url = server.base_url + payload.path
    return functools.partial(loadgen.run_wrk, url, _script(cache, payload)), sample


@dataclass(frozen=True, slots=True)
class Attempt:
    """One timed load and the CPU accounting around it."""

    result: loadgen.LoadResult
    other_cpu_pct: float
    server_cpu_s: float
    front_cpu_s: float
    loadgen_cpu_s: float
    busy_before_pct: float


def timed_load(server: ManagedServer, run: Runner, c: int, plan: Plan, say: Say) -> Attempt:
    """Wait for a quiet machine, warm up, then run the measured load with CPU accounting."""
    busy_before = wait_quiet(plan, say)
    if plan.warmup_s > 0:
        run(c, plan.warmup_s)
    before, started = procs.CpuSample.take(server.root_pid()), time.monotonic()
    result = run(c, plan.duration_s)
    after, wall = procs.CpuSample.take(server.root_pid()), time.monotonic() - started
    return Attempt(
        result,
        procs.other_cpu_percent(before, after, wall, os.cpu_count() or 1),
        after.tree_s - before.tree_s,
        after.root_s - before.root_s,
        after.children_s - before.children_s,
        busy_before,
    )


def _per_request(cpu_s: float, requests: int) -> float | None:
    """CPU microseconds per request over a timed load (None when nothing was served)."""
    return round(cpu_s / requests * 1e6) if requests > 0 else None


def least_disturbed(
    server: ManagedServer, run: Runner, c: int, plan: Plan, say: Say
) -> tuple[Attempt, int]:
    """Repeat a disturbed load up to ``plan.noisy_retries`` times; keep the least disturbed."""
    attempts = [timed_load(server, run, c, plan, say)]
    while attempts[-1].other_cpu_pct > NOISY_PCT and len(attempts) <= plan.noisy_retries:
        say(f"    other processes took {attempts[-1].other_cpu_pct:.0f}% of the CPU: again")
        attempts.append(timed_load(server, run, c, plan, say))
    return min(attempts, key=lambda attempt: attempt.other_cpu_pct), len(attempts)


def measure_point(
    server: ManagedServer,
    config: str,
    payload: Payload,
    concurrency: int,
    plan: Plan,
    cache: Path,
    say: Say,
) -> Row:
    """Check one request works, run the (least disturbed) timed load, read the tree's RSS."""
    run, sample = load_runner(server, payload, cache)
    if run is None:
        detail = {"reason": sample}
        return _row(config, payload.row, concurrency, note="request rejected", detail=detail)
    best, tries = least_disturbed(server, run, concurrency, plan, say)
    result = best.result
    rss, count = server.snapshot()
    return _row(
        config,
        payload.row,
        concurrency,
        req_per_s=round(result.ok_per_s, 1),
        p50_ms=round(result.p50_us / 1e3, 3),
        p99_ms=round(result.p99_us / 1e3, 3),
        errors=result.errors,
        rss_mib=round(rss / MIB, 1),
        procs=count,
        other_cpu_pct=round(best.other_cpu_pct, 1),
        front_us=_per_request(best.front_cpu_s, result.requests),
        workers_us=_per_request(best.server_cpu_s - best.front_cpu_s, result.requests),
        note=f"{result.errors} failed requests" if result.errors else "",
        detail={
            "wrk": result.to_dict(),
            "sample_response": sample,
            "server_cpu_s": round(best.server_cpu_s, 2),
            "front_cpu_s": round(best.front_cpu_s, 2),
            "loadgen_cpu_s": round(best.loadgen_cpu_s, 2),
            "machine_busy_pct_before": round(best.busy_before_pct, 1),
            "attempts": tries,
        },
    )


def _stop(server: ManagedServer, say: Say) -> None:
    leftover = server.stop()
    if leftover:
        say(f"  had to SIGKILL leftover processes {leftover}")


def cold_start(server: ManagedServer, payload: Payload, plan: Plan, say: Say) -> float:
    """Start ``server`` on a quiet machine; seconds from launch to its first prediction."""
    wait_quiet(plan, say)
    server.start()
    return wait_first_prediction(server, payload, plan.ready_timeout_s)


def more_cold_starts(factory: ServerFactory, payload: Payload, plan: Plan, say: Say) -> list[float]:
    """Start and stop fresh instances ``plan.cold_starts - 1`` more times, timing each."""
    times: list[float] = []
    for _ in range(plan.cold_starts - 1):
        server = factory()
        try:
            times.append(cold_start(server, payload, plan, say))
        finally:
            _stop(server, say)
    return times


def run_server(
    factory: ServerFactory,
    config: str,
    payloads: dict[str, Payload],
    plan: Plan,
    cache: Path,
    say: Say,
) -> list[Row]:
    """Start a server, time its cold start, run its points, always stop it; then more starts."""
    todo = points(plan, config)
    rows: list[Row] = []
    server = factory()
    say(f"starting {LABELS[config]} (log: {server.log_path})")
    try:
        colds = [cold_start(server, payloads["png"], plan, say)]
        say(f"  first prediction after {colds[0]:.2f} s")
        for row, concurrency in todo:
            say(f"  {row} c={concurrency}: {plan.warmup_s:g} s warm-up + {plan.duration_s:g} s")
            rows.append(measure_point(server, config, payloads[row], concurrency, plan, cache, say))
    except (ServerNotReady, OSError, loadgen.LoadGenError, httpx.HTTPError) as exc:
        say(f"  {config} unavailable: {exc}")
        detail = {"reason": str(exc).splitlines()[0][:300], "log_tail": server.log_tail()}
        done = {(r.row, r.concurrency) for r in rows}
        missing = [(r, c) for r, c in todo if (r, c) not in done]
        rows += [_row(config, r, c, note="not available", detail=detail) for r, c in missing]
        return rows
    finally:
        _stop(server, say)
    if plan.cold_starts > 1:
        say(f"  {plan.cold_starts - 1} more cold starts")
        try:
            colds += more_cold_starts(factory, payloads["png"], plan, say)
        except (ServerNotReady, OSError, httpx.HTTPError) as exc:
            say(f"  a later cold start failed ({exc}); reporting the ones that worked")
    if rows:
        rows[0].cold_start_s = round(statistics.median(colds), 3)
        rows[0].detail["cold_starts_s"] = [round(value, 3) for value in colds]
    return rows


def run_ceiling(
    repo: Path,
    example_dir: Path,
    seconds: float,
    threads: int = 0,
    batch: int = 1,
    processes: int = 1,
) -> Row:
    """Measure the model-only ceiling in child Python processes (keeps torch out of this one).

    ``threads`` > 0 pins torch's thread count; 0 keeps its default. ``processes`` run side by side,
    each on ``batch`` images per forward pass, as that many workers would: their images/s add up.
    """
    row = "model" if threads <= 0 else f"model-{threads}thread"
    row += f"-batch{batch}" if batch > 1 else ""
    row += f"-x{processes}" if processes > 1 else ""
    cmd = [sys.executable, "-m", "bench.ceiling", "--example-dir", str(example_dir)]
    cmd += ["--png", str(png_path(example_dir)), "--seconds", str(seconds)]
    cmd += ["--threads", str(threads), "--batch", str(batch)]
    before, started = procs.CpuSample.take(None), time.monotonic()
    children = [
        subprocess.Popen(
            cmd,
            cwd=repo,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(max(1, processes))
    ]
    outputs = [child.communicate(timeout=seconds + 120) for child in children]
    after, wall = procs.CpuSample.take(None), time.monotonic() - started
    other = procs.other_cpu_percent(before, after, wall, os.cpu_count() or 1)
    failed = [err for child, (_, err) in zip(children, outputs, strict=True) if child.returncode]
    if failed:
        detail = {"reason": " ".join(failed[0].strip().splitlines()[-1:])}
        return _row("ceiling", row, 1, note="not available", detail=detail)
    runs = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    data = {**runs[0], "per_s": round(sum(run["per_s"] for run in runs), 2), "runs": runs}
    shape = f"batch {batch}, {data['torch_threads']} torch threads"
    shape += f", {len(runs)} processes" if len(runs) > 1 else ""
    return _row(
        "ceiling",
        row,
        1,
        req_per_s=data["per_s"],
        p50_ms=max(run["p50_ms"] for run in runs),
        p99_ms=max(run["p99_ms"] for run in runs),
        errors=0,
        other_cpu_pct=round(other, 1),
        note=f"images/s, {shape}",
        detail=data,
    )
