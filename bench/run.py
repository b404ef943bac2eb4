"""``make bench``: marserve vs TorchServe 0.12 on one MNIST archive, printed side by side."""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the ``bench`` package importable
    sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402

from bench import explain as explain_bench  # noqa: E402
from bench import harness, loadgen, payloads, report  # noqa: E402
from bench.marserve_server import Marserve  # noqa: E402
from bench.servers import ManagedServer, free_ports, models_property, properties_text  # noqa: E402
from bench.torchserve import TorchServe, build_archive, ensure_venv, quiet_log_config  # noqa: E402

CACHE = REPO / "bench" / ".cache"
MODEL = "mnist"
DEFAULT_SERVERS = (*harness.SERVER_CONFIGS, "ceiling")
# "explain" alone runs just the explain rows; they also run with "marserve" (--explain-rounds 0
# leaves them out).
CHOICES = (*DEFAULT_SERVERS, "explain")


def _csv(kind: type, allowed: tuple[str, ...] | None = None) -> Any:
    def parse(text: str) -> tuple[Any, ...]:
        items = tuple(kind(part.strip()) for part in text.split(",") if part.strip())
        bad = [item for item in items if allowed is not None and item not in allowed]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"expected a comma list of {allowed or kind.__name__}")
        return items

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; defaults make a full run take about five minutes on two cores."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=15.0, help="seconds per load point")
    p.add_argument("--warmup", type=float, default=5.0, help="warm-up seconds per load point")
    p.add_argument("--concurrency", type=_csv(int), default=(1, 8, 32), help="PNG levels")
    servers = _csv(str, CHOICES)
    p.add_argument("--servers", type=servers, default=DEFAULT_SERVERS, help=",".join(CHOICES))
    p.add_argument("--rows", type=_csv(str, harness.ROWS), default=harness.ROWS)
    p.add_argument("--extra-concurrency", type=int, default=8, help="level of v1/v2 rows")
    p.add_argument("--thread-compare-concurrency", type=int, default=32)
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="batchSize of marserve and tuned TorchServe (the default TorchServe rows keep 1)",
    )
    p.add_argument("--max-batch-delay", type=int, default=5, help="maxBatchDelay, milliseconds")
    p.add_argument("--ceiling-seconds", type=float, default=5.0)
    p.add_argument(
        "--explain-rounds",
        type=int,
        default=explain_bench.ExplainPlan().rounds,
        help="explain: rounds (0: none)",
    )
    p.add_argument(
        "--explain-requests",
        type=int,
        default=explain_bench.ExplainPlan().requests,
        help="explain: trios per round",
    )
    p.add_argument("--example-dir", type=Path, default=REPO / "examples" / "mnist")
    p.add_argument("--wait-example", type=float, default=120.0, help="seconds to wait for it")
    p.add_argument("--ready-timeout", type=float, default=120.0, help="seconds to first answer")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each measurement, wait up to this many seconds for the machine to be idle",
    )
    p.add_argument("--quiet-threshold", type=float, default=15.0, help="idle means CPU %% below")
    p.add_argument("--cold-starts", type=int, default=3, help="starts per server (median)")
    p.add_argument(
        "--noisy-retries",
        type=int,
        default=2,
        help="repeat a point this many times at most while other processes disturb it",
    )
    return p.parse_args(argv)


def _fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def make_server(
    config: str, bindir: Path, store: Path, archive: Path, batching: tuple[int, int] = (1, 0)
) -> ManagedServer:
    """Build the server object for one configuration, with its config.properties written.

    ``batching`` (batchSize, maxBatchDelay ms) applies to marserve and tuned TorchServe, each
    with one worker per CPU; the default TorchServe rows are TorchServe out of the box."""
    run_dir = CACHE / "runs" / config
    if config != "marserve":  # a killed earlier run may have left its TorchServe running
        TorchServe(config, run_dir, free_ports(), bindir, store, archive).stop_leftover()
    _fresh_dir(run_dir)
    ports = free_ports()
    extra: dict[str, str] = {}
    cores = os.cpu_count() or 1
    if config in ("marserve", "torchserve-tuned"):
        extra["models"] = models_property(MODEL, archive.name, cores, *batching)
    server: ManagedServer
    if config == "marserve":
        executable = Path(sys.executable).parent / "marserve"
        server = Marserve(run_dir, ports, executable, store, archive)
    elif config == "torchserve":
        server = TorchServe(config, run_dir, ports, bindir, store, archive)
    else:
        extra["default_workers_per_model"] = str(cores)
        threads = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        log_config = quiet_log_config(run_dir) if config == "torchserve-tuned" else None
        server = TorchServe(config, run_dir, ports, bindir, store, archive, threads, log_config)
    (run_dir / "config.properties").write_text(properties_text(ports, extra))
    return server


def _version(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return "missing"
    if proc.returncode != 0:
        return f"unavailable (exit {proc.returncode})"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def metadata(args: argparse.Namespace, bindir: Path, load_before: str) -> dict[str, Any]:
    """What the run measured on, for the JSON and markdown outputs."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu": f"{os.cpu_count()} x {_cpu_model()}",
        "os": platform.platform(),
        "python": platform.python_version(),
        "load generator": f"{loadgen.wrk_version()} (1 thread, keep-alive)",
        "torchserve": _version([str(bindir / "torchserve"), "--version"]),
        "marserve": _version([str(Path(sys.executable).parent / "marserve"), "--version"]),
        "java": _version(["java", "-version"]),
        "duration per point s": args.duration,
        "warm-up per point s": args.warmup,
        "batching": (
            f"batchSize {args.batch_size}, maxBatchDelay {args.max_batch_delay} ms, one worker "
            "per CPU for marserve and tuned TorchServe; the default TorchServe rows keep theirs"
        ),
        "req/s": "successful (HTTP < 400) responses per second",
        "CPU us/req": "the front process's own CPU, and the rest of the server's tree, per request",
        "RSS": "sum over the server's process tree, read after each point",
        "cold start": f"median of {args.cold_starts} launches, to the first successful PNG answer",
        "load average before / after": f"{load_before} / {_loadavg()}",
    }


def prepare(args: argparse.Namespace, say: harness.Say) -> tuple[Path, Path, Path]:
    """wrk, the example, TorchServe's venv and the archive; returns (bindir, store, archive)."""
    loadgen.ensure_wrk()
    missing = payloads.missing_example_files(args.example_dir)
    if missing:
        say(f"waiting up to {args.wait_example:g} s for {args.example_dir}: missing {missing}")
        missing = payloads.wait_for_example(args.example_dir, args.wait_example)
        if missing:
            raise SystemExit(f"example incomplete in {args.example_dir}: {missing}")
    say(f"ensuring TorchServe 0.12 in {CACHE / 'torchserve-venv'} (first run installs it)")
    bindir = ensure_venv(CACHE / "torchserve-venv")
    store = _fresh_dir(CACHE / "model-store")
    archive = build_archive(bindir, args.example_dir.resolve(), store, MODEL)
    say(f"built {archive} with TorchServe's torch-model-archiver")
    return bindir, store, archive


def run_explain(
    args: argparse.Namespace, store: Path, archive: Path, say: harness.Say
) -> list[report.Row]:
    """The explain rows: marserve (one worker) against Captum called in-process."""
    executable = Path(sys.executable).parent / "marserve"

    def make(run_dir: Path) -> ManagedServer:
        return Marserve(run_dir, free_ports(), executable, store, archive)

    plan = explain_bench.ExplainPlan(rounds=args.explain_rounds, requests=args.explain_requests)
    return explain_bench.run_explain(REPO, args.example_dir.resolve(), make, CACHE, plan, say)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 160)
    say = console.print
    plan = harness.Plan(
        duration_s=args.duration,
        warmup_s=args.warmup,
        concurrency=args.concurrency,
        servers=args.servers,
        rows=args.rows,
        extra_concurrency=args.extra_concurrency,
        thread_compare_concurrency=args.thread_compare_concurrency,
        ceiling_s=args.ceiling_seconds,
        ready_timeout_s=args.ready_timeout,
        quiet_wait_s=args.quiet_wait,
        quiet_threshold_pct=args.quiet_threshold,
        noisy_retries=args.noisy_retries,
        cold_starts=max(1, args.cold_starts),
    )
    load_before = _loadavg()
    bindir, store, archive = prepare(args, say)
    example = args.example_dir.resolve()
    bodies = payloads.build_payloads(example, MODEL)
    rows: list[report.Row] = []
    for config in plan.servers:
        if config in ("ceiling", "explain"):
            continue
        batching = (args.batch_size, args.max_batch_delay)
        factory = functools.partial(make_server, config, bindir, store, archive, batching)
        rows += harness.run_server(factory, config, bodies, plan, CACHE, say)
    if "ceiling" in plan.servers and plan.ceiling_s > 0:
        say(f"model-only ceiling: {plan.ceiling_s:g} s in-process")
        for threads in (0, 1):
            harness.wait_quiet(plan, say)
            rows.append(harness.run_ceiling(REPO, example, plan.ceiling_s, threads))
        # What the servers' workers could do at most: one per CPU, one thread, full batches.
        harness.wait_quiet(plan, say)
        workers = os.cpu_count() or 1
        ceiling = harness.run_ceiling(REPO, example, plan.ceiling_s, 1, args.batch_size, workers)
        rows.append(ceiling)
    explain = "explain" in plan.servers or "marserve" in plan.servers
    if explain and args.explain_rounds > 0:
        say("explain latency: marserve vs Captum in-process, one image at a time")
        harness.wait_quiet(plan, say)
        rows += run_explain(args, store, archive, say)
    checks = report.evaluate(rows) + explain_bench.checks(rows)
    report.print_table(rows, checks, console)
    json_path, md_path = CACHE / "last-results.json", CACHE / "RESULTS.generated.md"
    report.write_outputs(rows, checks, metadata(args, bindir, load_before), json_path, md_path)
    say(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
