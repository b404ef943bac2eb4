"""``make bench-gateway``: PNG predictions through the gateway vs straight to the replica.

One ``marserve serve`` replica of the MNIST example and one gateway process routing
``mnist.default.example.com`` to it; wrk (one thread, keep-alive) POSTs ``test_data/0.png`` to
``/predictions/mnist`` at each concurrency, direct and through the gateway, alternated so drift on
a shared machine hits both. Target at c=8: at most 10% fewer req/s and at most 0.5 ms more p50.

``python bench/gateway.py [--duration S] [--concurrency 1,8,32]``; the gateway process alone:
``python bench/gateway.py --serve-gateway --upstream HOST:PORT --port-file FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the ``bench`` package importable
    sys.path.insert(0, str(REPO))

from bench import grpc_load, loadgen, payloads  # noqa: E402
from bench.marserve_server import Marserve  # noqa: E402
from bench.payloads import Payload  # noqa: E402
from bench.servers import free_ports, properties_text, wait_first_prediction  # noqa: E402

CACHE = REPO / "bench" / ".cache"
EXAMPLE = REPO / "examples" / "mnist"
HOST = "mnist.default.example.com"
GRPC_HOST = "mnist-grpc.default.example.com"
TARGET_RATIO = 0.90
TARGET_P50_MS = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured load")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per load")
    p.add_argument("--concurrency", default="1,8,32", help="comma list of connection counts")
    p.add_argument("--rounds", type=int, default=1, help="direct/gateway pairs per level")
    p.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the gateway's event loop"
    )
    p.add_argument("--serve-gateway", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--upstream", help=argparse.SUPPRESS)
    p.add_argument("--grpc-port", type=int, help=argparse.SUPPRESS)
    p.add_argument(
        "--grpc-concurrency", type=int, default=8, help="level of the gRPC row (0: no gRPC row)"
    )
    p.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


async def _serve_gateway(upstream: str, grpc_port: int | None, port_file: Path) -> None:
    from marserve.controlplane.gateway import Gateway
    from marserve.controlplane.routing import Endpoint, RevisionRoute, ServiceRoute

    host, port = upstream.rsplit(":", 1)
    gateway = Gateway()
    endpoints = (Endpoint(host, int(port), grpc_port),)
    rest = RevisionRoute("mnist-predictor-00001", 100, endpoints)
    grpc = RevisionRoute("mnist-grpc-predictor-00001", 100, endpoints)
    gateway.update(
        [
            ServiceRoute("default", "mnist", "example.com", (rest,)),
            ServiceRoute("default", "mnist-grpc", "example.com", (grpc,), protocol="grpc"),
        ]
    )
    await gateway.start("127.0.0.1", 0)
    port_file.write_text(str(gateway.port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await gateway.stop()


def serve_gateway(upstream: str, grpc_port: int | None, port_file: Path, loop: str) -> None:
    """The gateway process, on uvloop (as ``marserve serve`` runs) or asyncio's own loop."""
    if loop == "uvloop":
        import uvloop

        uvloop.run(_serve_gateway(upstream, grpc_port, port_file))
    else:
        asyncio.run(_serve_gateway(upstream, grpc_port, port_file))


def build_store() -> Path:
    out = CACHE / "gateway-store"
    build = [sys.executable, str(EXAMPLE / "build_store.py"), "--out", str(out)]
    subprocess.run(build, check=True, capture_output=True)
    return out / "model-store"


def start_gateway(
    upstream_port: int, grpc_port: int, run_dir: Path, loop: str
) -> tuple[subprocess.Popen[bytes], int]:
    port_file = run_dir / "gateway.port"
    port_file.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--serve-gateway", "--upstream"]
    command += [f"127.0.0.1:{upstream_port}", "--port-file", str(port_file), "--loop", loop]
    command += ["--grpc-port", str(grpc_port)]
    log = (run_dir / "gateway.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not port_file.exists() or not port_file.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"gateway did not start: {(run_dir / 'gateway.log').read_text()}")
        time.sleep(0.05)
    return process, int(port_file.read_text())


def measure(url: str, script: Path, c: int, args: argparse.Namespace) -> loadgen.LoadResult:
    if args.warmup > 0:
        loadgen.run_wrk(url, script, c, args.warmup)
    return loadgen.run_wrk(url, script, c, args.duration)


def row(result: loadgen.LoadResult) -> dict[str, float | int]:
    return {
        "req_s": round(result.ok_per_s, 1),
        "p50_ms": round(result.p50_us / 1000, 3),
        "p99_ms": round(result.p99_us / 1000, 3),
        "errors": result.errors,
    }


def run(args: argparse.Namespace) -> int:
    loadgen.ensure_wrk()
    run_dir = CACHE / "runs" / "gateway"
    run_dir.mkdir(parents=True, exist_ok=True)
    store = build_store()
    ports = free_ports()
    (run_dir / "config.properties").write_text(properties_text(ports))
    executable = Path(sys.executable).parent / "marserve"
    replica = Marserve(run_dir, ports, executable, store, store / "mnist.mar")
    png = (EXAMPLE / "test_data" / "0.png").read_bytes()
    payload = Payload("png", "/predictions/mnist", png, {"Content-Type": "image/png"})
    body = run_dir / "0.png"
    body.write_bytes(png)
    direct_script = run_dir / "direct.lua"
    direct_script.write_text(loadgen.lua_script(body, payload.headers))
    gateway_script = run_dir / "gateway.lua"
    gateway_script.write_text(loadgen.lua_script(body, {**payload.headers, "Host": HOST}))
    replica.start()
    gateway = None
    results: dict[str, dict[str, dict[str, float | int]]] = {}
    try:
        wait_first_prediction(replica, payload, 120)
        gateway, gateway_port = start_gateway(
            ports.inference, ports.grpc_inference, run_dir, args.loop
        )
        direct_url = f"http://127.0.0.1:{ports.inference}/predictions/mnist"
        gateway_url = f"http://127.0.0.1:{gateway_port}/predictions/mnist"
        for c in (int(x) for x in args.concurrency.split(",")):
            best: dict[str, loadgen.LoadResult] = {}
            for _ in range(args.rounds):
                for name, url, script in (
                    ("direct", direct_url, direct_script),
                    ("gateway", gateway_url, gateway_script),
                ):
                    result = measure(url, script, c, args)
                    if name not in best or result.ok_per_s > best[name].ok_per_s:
                        best[name] = result
            results[str(c)] = {name: row(result) for name, result in best.items()}
            print(f"c={c}: {json.dumps(results[str(c)])}", flush=True)
        if args.grpc_concurrency:
            key = f"grpc c={args.grpc_concurrency}"
            results[key] = grpc_rows(ports.grpc_inference, gateway_port, run_dir, args)
            print(f"{key}: {json.dumps(results[key])}", flush=True)
    finally:
        if gateway is not None:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(30)
        replica.stop()
    print(f"(gateway on {args.loop}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    return report(results)


def grpc_rows(
    grpc_port: int, gateway_port: int, run_dir: Path, args: argparse.Namespace
) -> dict[str, dict[str, float | int]]:
    """KServe v2 ModelInfer (raw tensor) direct to the gRPC port vs through the gateway (h2c)."""
    v2 = (EXAMPLE / "requests" / "v2" / "mnist_v2_tensor.json").read_bytes()
    body = run_dir / "grpc-raw.bin"
    body.write_bytes(payloads.grpc_raw_body(v2, "mnist"))
    c = args.grpc_concurrency
    out = {}
    for name, target, authority in (
        ("direct", f"127.0.0.1:{grpc_port}", None),
        ("gateway", f"127.0.0.1:{gateway_port}", GRPC_HOST),
    ):
        ok, sample = grpc_load.probe(
            target, payloads.GRPC_MODEL_INFER, body.read_bytes(), 30.0, authority
        )
        if not ok:
            raise SystemExit(f"gRPC {name} probe failed: {sample}")
        if args.warmup > 0:
            grpc_load.run_load(target, payloads.GRPC_MODEL_INFER, body, c, args.warmup, authority)
        result = grpc_load.run_load(
            target, payloads.GRPC_MODEL_INFER, body, c, args.duration, authority
        )
        out[name] = row(result)
    return out


def report(results: dict[str, dict[str, dict[str, float | int]]]) -> int:
    print(
        f"\n{'c':>10} {'direct req/s':>13} {'gateway req/s':>14} {'ratio':>6} "
        f"{'p50 d/g ms':>14} {'p99 d/g ms':>15}"
    )
    for c, pair in results.items():
        d, g = pair["direct"], pair["gateway"]
        ratio = float(g["req_s"]) / float(d["req_s"]) if d["req_s"] else 0.0
        print(
            f"{c:>10} {d['req_s']:>13} {g['req_s']:>14} {ratio:>6.3f} "
            f"{d['p50_ms']:>6.2f}/{g['p50_ms']:<7.2f} {d['p99_ms']:>7.2f}/{g['p99_ms']:<7.2f}"
        )
    (CACHE / "gateway-results.json").write_text(json.dumps(results, indent=2))
    at8 = results.get("8")
    if at8 is None:
        return 0
    d, g = at8["direct"], at8["gateway"]
    ratio_ok = float(g["req_s"]) >= TARGET_RATIO * float(d["req_s"])
    p50_ok = float(g["p50_ms"]) - float(d["p50_ms"]) <= TARGET_P50_MS
    print(
        f"\nc=8 req/s within 10%: {'yes' if ratio_ok else 'NO'}; "
        f"p50 within +0.5 ms: {'yes' if p50_ok else 'NO'}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_gateway:
        serve_gateway(args.upstream, args.grpc_port, args.port_file, args.loop)
        return 0
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
