"""BERT through ``marserve serve`` next to the same handler called in-process (predict, explain).

    .venv/bin/python bench/text.py [--seconds 30] [--rounds 6]

Builds the BERT example's store (cached), starts the server and loads the handler in this
process, then alternates short windows of each (never both at once; medians reported, so load
from elsewhere on a shared machine hits both sides alike), all with one torch thread:

- in-process: the example's handler (``examples/bert/bert_handler.py``) initialised from the
  extracted archive and called directly: predict of 1 sentence, predict of a batch of 8, and the
  explanation of one sentence (Captum, n_steps=50);
- served: ``marserve serve`` with ``batchSize`` 8: v1 predict of one sentence per request at
  c=1 and c=8 driven by wrk (the dynamic batcher fills batches of up to 8), and the v1 explain
  of one sentence.

Targets: served c=8 at least 90 % of in-process batch-8 throughput; served explain at most 1.1x
in-process. Results go to ``bench/.cache/text-results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx

if str(REPO_ROOT := Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # run as a script: make the ``bench`` package importable

from bench import loadgen

REPO = Path(__file__).resolve().parents[1]
BERT = REPO / "examples" / "bert"
CACHE = REPO / "bench" / ".cache"
SENTENCE = "The plot is a dull, predictable mess and the acting is even worse than the script."
EXPLAINED = "A gorgeous, witty, seductive movie that never lets up."
READY_S = 180.0


def build_store(out: Path) -> Path:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(BERT / "build_store.py"), "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, env=env)
    return out / "model-store" / "bert.mar"


# in-process ----------------------------------------------------------------------------------
def in_process_handler(archive: Path, folder: Path) -> Any:
    """The example's handler initialised from the extracted archive, as a worker would."""
    import torch

    from marserve.handlers import Context, install_ts_shim
    from marserve.handlers.loader import import_module_file

    torch.set_num_threads(1)
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(folder)
    install_ts_shim()
    module = import_module_file(folder / "bert_handler.py", "bench_bert_handler")
    manifest = json.loads((folder / "MAR-INF" / "MANIFEST.json").read_text())
    handler = module.TransformersSeqClassifierHandler()
    handler.initialize(Context("bert", str(folder), manifest, 8, None, "bench"))
    return handler


def rate(call: Any, seconds: float, items: int) -> float:
    """Items per second of ``call`` repeated for ``seconds`` (after one warm-up call)."""
    call()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        done += items
    return done / (time.perf_counter() - start)


def local_predict(handler: Any, texts: list[str]) -> Any:
    return handler.postprocess(handler.inference(handler.preprocess(texts)))


def local_explain_ms(handler: Any) -> float:
    start = time.perf_counter()
    handler.get_insights_batch([EXPLAINED], [None], 50)
    return (time.perf_counter() - start) * 1000


# served --------------------------------------------------------------------------------------
def start_server(tmp: Path, store: Path) -> tuple[subprocess.Popen[bytes], str]:
    snapshot = {
        "name": "startup.cfg",
        "modelCount": 1,
        "models": {
            "bert": {
                "1.0": {
                    "defaultVersion": True,
                    "marName": "bert.mar",
                    "minWorkers": 1,
                    "maxWorkers": 1,
                    "batchSize": 8,
                    "maxBatchDelay": 10,
                    "responseTimeout": 120,
                }
            }
        },
    }
    config = tmp / "config.properties"
    lines = [f"{k}=http://127.0.0.1:0" for k in ("inference_address", "management_address")]
    lines += ["metrics_address=http://127.0.0.1:0", "grpc_inference_port=0"]
    lines += ["grpc_management_port=0", "disable_token_authorization=true"]
    config.write_text("\n".join([*lines, f"model_snapshot={json.dumps(snapshot)}"]) + "\n")
    ports = tmp / "ports.json"
    command = [sys.executable, "-m", "marserve", "serve", "--foreground", "--model-store"]
    command += [str(store), "--ts-config", str(config), "--port-file", str(ports)]
    command += ["--pid-file", str(tmp / "marserve.pid")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = (tmp / "server.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline and process.poll() is None:
        if ports.exists() and ports.stat().st_size:
            url = json.loads(ports.read_text())["inference"]
            try:
                if httpx.get(f"{url}/v1/models/bert", timeout=5).json().get("ready"):
                    return process, url
            except (httpx.HTTPError, ValueError):
                pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"marserve did not become ready:\n{(tmp / 'server.log').read_text()}")


def served_rate(url: str, script: Path, concurrency: int, seconds: float) -> dict[str, float]:
    """wrk (one thread, ``concurrency`` keep-alive connections): one sentence per request."""
    result = loadgen.run_wrk(f"{url}/v1/models/bert:predict", script, concurrency, seconds)
    return {"req_s": result.ok_per_s, "errors": float(result.errors)}


def served_explain_ms(http: httpx.Client) -> float:
    start = time.perf_counter()
    reply = http.post("/v1/models/bert:explain", json={"instances": [{"data": EXPLAINED}]})
    reply.raise_for_status()
    return (time.perf_counter() - start) * 1000


def measure(
    handler: Any, url: str, script: Path, seconds: float, rounds: int
) -> tuple[dict[str, float], ...]:
    """Served and in-process points alternated, so load from elsewhere hits both alike."""
    local: dict[str, list[float]] = {"predict_1": [], "predict_batch8": [], "explain_ms": []}
    served: dict[str, list[float]] = {"c1": [], "c8": [], "explain_ms": [], "errors": []}
    window = seconds / rounds
    for _ in range(rounds):
        local["predict_1"].append(rate(lambda: local_predict(handler, [SENTENCE]), window, 1))
        c1 = served_rate(url, script, 1, window)
        local["predict_batch8"].append(
            rate(lambda: local_predict(handler, [SENTENCE] * 8), window, 8)
        )
        c8 = served_rate(url, script, 8, window)
        served["c1"].append(c1["req_s"])
        served["c8"].append(c8["req_s"])
        served["errors"].append(c1["errors"] + c8["errors"])
    with httpx.Client(base_url=url, timeout=120) as http:
        served_explain_ms(http)  # warm-up on both sides
        local_explain_ms(handler)
        for _ in range(rounds):
            served["explain_ms"].append(served_explain_ms(http))
            local["explain_ms"].append(local_explain_ms(handler))
    medians = {k: statistics.median(v) for k, v in local.items()}
    served_medians = {k: statistics.median(v) for k, v in served.items() if k != "errors"}
    served_medians["errors"] = sum(served["errors"])
    return medians, served_medians


def wrk_script(folder: Path) -> Path:
    body = folder / "predict.json"
    body.write_text(json.dumps({"instances": [{"data": SENTENCE}]}))
    script = folder / "predict.lua"
    script.write_text(loadgen.lua_script(body, {"Content-Type": "application/json"}))
    return script


def report(local: dict[str, float], served: dict[str, float]) -> dict[str, Any]:
    c8_ratio = served["c8"] / local["predict_batch8"]
    explain_ratio = served["explain_ms"] / local["explain_ms"]
    rows = [
        ("predict c=1 (req/s)", served["c1"], local["predict_1"], "in-process batch 1"),
        ("predict c=8 (req/s)", served["c8"], local["predict_batch8"], "in-process batch 8"),
        ("explain, n_steps=50 (ms)", served["explain_ms"], local["explain_ms"], "in-process"),
    ]
    print(f"{'BERT (MiniLM, 1 torch thread)':32} {'marserve':>10} {'in-process':>11}  baseline")
    for name, ours, theirs, note in rows:
        print(f"{name:32} {ours:10.1f} {theirs:11.1f}  {note}")
    print(f"c=8 served / in-process batch 8: {c8_ratio:.2f} (target >= 0.90)")
    print(f"explain served / in-process:     {explain_ratio:.2f} (target <= 1.10)")
    print(f"errors: {served['errors']:.0f}")
    return {
        "served": served,
        "in_process": local,
        "c8_ratio": c8_ratio,
        "explain_ratio": explain_ratio,
        "targets_met": c8_ratio >= 0.9 and explain_ratio <= 1.1 and served["errors"] == 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per predict point")
    parser.add_argument("--rounds", type=int, default=6, help="alternations (and explain calls)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-text-") as scratch:
        archive = build_store(Path(scratch) / "store")
        handler = in_process_handler(archive, Path(scratch) / "extracted")
        process, url = start_server(Path(scratch), archive.parent)
        try:
            script = wrk_script(Path(scratch))
            local, served = measure(handler, url, script, args.seconds, args.rounds)
        finally:
            process.terminate()
            process.wait(30)
    results = report(local, served)
    (CACHE / "text-results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
