"""The gRPC load generator for the ``grpc-*`` rows: wrk's role, for a unary gRPC method.

Run as ``python -m bench.grpc_load --target HOST:PORT --method /pkg.Service/Method --body FILE
--concurrency C --seconds S``: one process, one event loop, C calls always in flight, each sending
the same pre-serialized request bytes (no protobuf work on the client's hot path). It prints the
same ``WRK_RESULT {...}`` line as the wrk script, so :func:`bench.loadgen.parse_output` reads it
and the rows compare with the HTTP ones (``status_errors`` counts calls that ended in a status
other than OK; a call past its deadline is a timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np

from bench.loadgen import RESULT_MARK, LoadGenError, LoadResult, parse_output

REPO = Path(__file__).resolve().parents[1]
MAX_MESSAGE = 64 * 1024 * 1024
_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]


class _Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.bytes = 0
        self.status_errors = 0
        self.connect_errors = 0
        self.timeouts = 0

    def result(self, duration_s: float) -> dict[str, float | int]:
        done = np.asarray(self.latencies or [0.0]) * 1e6
        return {
            "duration_us": int(duration_s * 1e6),
            "requests": len(self.latencies) + self.timeouts,
            "bytes": self.bytes,
            "connect_errors": self.connect_errors,
            "read_errors": 0,
            "write_errors": 0,
            "status_errors": self.status_errors,
            "timeouts": self.timeouts,
            "p50_us": float(np.percentile(done, 50)),
            "p90_us": float(np.percentile(done, 90)),
            "p99_us": float(np.percentile(done, 99)),
            "mean_us": float(done.mean()),
            "max_us": float(done.max()),
        }


async def _worker(
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
    body: bytes,
    stop_at: float,
    timeout_s: float,
    tally: _Tally,
) -> None:
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        try:
            reply = await call(body, timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                tally.timeouts += 1
                continue
            if error.code() is grpc.StatusCode.UNAVAILABLE and "connect" in str(error.details()):
                tally.connect_errors += 1
            else:
                tally.status_errors += 1
        else:
            tally.bytes += len(reply)
        tally.latencies.append(time.perf_counter() - started)


async def drive(
    target: str,
    method: str,
    body: bytes,
    concurrency: int,
    seconds: float,
    timeout_s: float,
    authority: str | None = None,
) -> dict[str, float | int]:
    """Keep ``concurrency`` calls in flight for ``seconds``; the wrk-shaped result fields."""
    tally = _Tally()
    options = _OPTIONS + ([("grpc.default_authority", authority)] if authority else [])
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        await channel.channel_ready()
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        started = time.perf_counter()
        stop_at = started + seconds
        await asyncio.gather(
            *(_worker(call, body, stop_at, timeout_s, tally) for _ in range(concurrency))
        )
        return tally.result(time.perf_counter() - started)


def probe(
    target: str, method: str, body: bytes, timeout_s: float = 30.0, authority: str | None = None
) -> tuple[bool, str]:
    """Send one call: (succeeded, a short sample of the answer or of the error)."""
    options = _OPTIONS + ([("grpc.default_authority", authority)] if authority else [])
    with grpc.insecure_channel(target, options=options) as channel:
        call = channel.unary_unary(method)
        try:
            reply = call(body, timeout=timeout_s)
        except grpc.RpcError as error:
            return False, f"{error.code().name}: {error.details()}"[:120]  # type: ignore[attr-defined]
    return True, repr(bytes(reply)[:80])


def run_load(
    target: str,
    method: str,
    body_path: Path,
    concurrency: int,
    seconds: float,
    authority: str | None = None,
) -> LoadResult:
    """Run one bounded load in a child process (its CPU counts as the load generator's)."""
    cmd = [sys.executable, "-m", "bench.grpc_load", "--target", target, "--method", method]
    cmd += ["--body", str(body_path), "--concurrency", str(concurrency), "--seconds", str(seconds)]
    if authority:
        cmd += ["--authority", authority]
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if proc.returncode != 0:
        raise LoadGenError(f"grpc_load exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return parse_output(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--target", required=True, help="host:port")
    p.add_argument("--method", required=True, help="/package.Service/Method")
    p.add_argument("--body", type=Path, required=True, help="the serialized request")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=10.0, help="per-call deadline, seconds")
    p.add_argument("--authority", help=":authority to send (a gateway routes by it)")
    args = p.parse_args(argv)
    body = args.body.read_bytes()
    result = asyncio.run(
        drive(
            args.target,
            args.method,
            body,
            args.concurrency,
            args.seconds,
            args.timeout,
            args.authority,
        )
    )
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
