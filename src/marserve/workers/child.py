"""Worker process entry point: load one model's handler, then run batches sent by the front.

This is the only module of the server that imports torch or user handlers. It runs as
``python -m marserve.workers.child --fd N`` in a fresh interpreter (spawn semantics: safe for CUDA).
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from marserve.handlers.loader import HandlerError
from marserve.handlers.metrics import MetricsCache, batch_measurements
from marserve.observability.access_log import LOG_FORMAT_ENV, configure_worker_logging
from marserve.workers import tuning, wire
from marserve.workers.messages import Batch, BatchResult, ItemResult, Loaded, LoadModel

log = logging.getLogger("marserve.worker")

EntryPoint = Callable[[Any, Any], Any]


def _choose_device(torch: Any, worker_index: int) -> tuple[str, int | None]:
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        gpu = worker_index % torch.cuda.device_count()
        return f"cuda:{gpu}", gpu
    return "cpu", None


def _install_requirements(model_dir: Path, deps_dir: str, manifest: dict[str, Any]) -> None:
    """pip-install the archive's requirements into a per-model folder, never the server's env."""
    requirements = manifest.get("model", {}).get("requirementsFile")
    if not requirements:
        return
    target = Path(deps_dir)
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (target / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # workers of one model start together: install once
        marker = target / ".installed"
        if not marker.exists():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-warn-script-location",
                    "--target",
                    str(target),
                    "-r",
                    str(model_dir / requirements),
                ],
                check=True,
                cwd=model_dir,
            )
            marker.touch()
    sys.path.insert(0, str(target))


def load(message: LoadModel) -> tuple[EntryPoint, Any, Loaded]:
    """Import torch and the handler, build the TorchServe context, initialise the handler."""
    import torch

    torch.set_num_threads(max(1, message.torch_threads))
    from marserve.handlers.context import Context
    from marserve.handlers.loader import load_entry_point
    from marserve.handlers.shim import install_ts_shim

    install_ts_shim()
    model_dir = Path(message.model_dir)
    if message.deps_dir:
        _install_requirements(model_dir, message.deps_dir, message.manifest)
    device, gpu = _choose_device(torch, message.worker_index)
    metrics = MetricsCache(_metrics_config(message, model_dir), model_name=message.model_name)
    context = Context(
        message.model_name,
        str(model_dir),
        message.manifest,
        message.batch_size,
        gpu,
        message.server_version,
        metrics=metrics,
        model_yaml_config=message.model_yaml_config,
    )
    entry = load_entry_point(message.handler, model_dir, context)
    metrics.time_phases(entry)
    return entry, context, Loaded(pid=os.getpid(), device=device)


def _plain(value: Any) -> Any:
    """Turn torch tensors into numpy so that the front never needs torch to unpickle results."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _item_results(values: Any, batch: Batch, context: Any) -> BatchResult:
    if not isinstance(values, list) or len(values) != len(batch.items):
        got = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
        return BatchResult(
            batch.batch_id,
            error_status=500,
            error_message=(
                f"Invalid handler output: expected a list of {len(batch.items)} results, got {got}"
            ),
        )
    results = []
    for index, value in enumerate(values):
        code, phrase = context.get_response_status(index)
        results.append(
            ItemResult(
                value=_plain(value),
                status=int(code),
                message=phrase or "",
                content_type=context.get_response_content_type(index),
                headers=dict(context.get_response_headers(index) or {}),
            )
        )
    return BatchResult(batch.batch_id, results=results)


def _failure(batch: Batch, exc: BaseException) -> BatchResult:
    from marserve.handlers.exceptions import PredictionException

    if isinstance(exc, PredictionException):
        return BatchResult(
            batch.batch_id, error_status=int(exc.error_code), error_message=str(exc.message)
        )
    name = type(exc).__name__
    if isinstance(exc, MemoryError) or name == "OutOfMemoryError":
        _release_cuda_cache()
        return BatchResult(batch.batch_id, error_status=507, error_message="Out of resources")
    log.exception("handler failed on batch %d", batch.batch_id)
    return BatchResult(
        batch.batch_id,
        error_status=500,
        error_message=f"Prediction failed: the handler raised {name}",
    )


def _release_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def describe(entry: EntryPoint, batch: Batch) -> BatchResult:
    """TorchServe's customized metadata: the handler object's ``describe_handle()``."""
    method = getattr(getattr(entry, "__self__", None), "describe_handle", None)
    try:
        value = method() if callable(method) else None
    except Exception as exc:  # user code
        return _failure(batch, exc)
    return BatchResult(batch.batch_id, results=[ItemResult(_plain(value)) for _ in batch.items])


def run_batch(entry: EntryPoint, context: Any, batch: Batch) -> BatchResult:
    if batch.verb == "describe":
        return describe(entry, batch)
    headers = batch.headers
    if batch.verb == "explain":  # TorchServe's handlers pick explain_handle on this header
        headers = [{**h, "explain": "True"} for h in headers]
    context.begin_batch(batch.request_ids, headers)
    if isinstance(context.metrics, MetricsCache):
        context.metrics.set_request_ids(context.request_ids)
    start = time.perf_counter()
    try:
        values = entry(batch.items, context)
    except Exception as exc:  # the handler is user code: any failure becomes data
        result = _failure(batch, exc)
    else:
        result = _item_results(values, batch, context)
    elapsed = time.perf_counter() - start
    result.metrics, result.timings = batch_measurements(context.metrics, elapsed)
    return result


def _metrics_config(message: LoadModel, model_dir: Path) -> str | None:
    """The server's metrics.yaml, else one shipped in the archive, else none."""
    if message.metrics_config:
        return message.metrics_config
    shipped = model_dir / "metrics.yaml"
    return str(shipped) if shipped.is_file() else None


def _preload() -> None:
    """Import torch and the handler runtime before the model is known: a worker started early
    (see ``WarmProcesses``) does this while the front is still starting."""
    import torch  # noqa: F401

    import marserve.handlers.base_handler  # noqa: F401


def serve(sock: socket.socket) -> int:
    _preload()
    message = wire.recv(sock)
    if not isinstance(message, LoadModel):
        return 2
    try:
        entry, context, loaded = load(message)
    except Exception as exc:
        log.exception("loading model %s failed", message.model_name)
        error = f"{type(exc).__name__}: {exc}"
        permanent = isinstance(exc, (HandlerError, ImportError, SyntaxError))
        wire.send(sock, Loaded(os.getpid(), "", error, permanent=permanent))
        return 1
    wire.send(sock, loaded)
    while True:
        try:
            batch = wire.recv(sock)
        except wire.ConnectionClosed:
            return 0
        wire.send(sock, run_batch(entry, context, batch))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="marserve worker (started by the server)")
    parser.add_argument("--fd", type=int, required=True, help="inherited socket file descriptor")
    args = parser.parse_args(argv)
    tuning.keep_freed_memory(os.environ)
    configure_worker_logging(
        os.environ.get("MARSERVE_WORKER_LOG_LEVEL", "WARNING"), os.environ.get(LOG_FORMAT_ENV)
    )
    sock = socket.socket(fileno=args.fd)
    try:
        return serve(sock)
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
