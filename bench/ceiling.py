"""The ceiling: model-only MNIST throughput in one process (no server, no HTTP).

Run as ``python -m bench.ceiling --example-dir examples/mnist --seconds 5 [--batch 8]``; prints
one JSON line with images per second. The harness starts it as child processes (one per worker
the servers run, for the batched ceiling) so torch never loads into the orchestrating process.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def preprocess(png: Path) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The PNG as a normalised [1, 1, 28, 28] float32 array, as the handler would make it."""
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return ((pixels - MNIST_MEAN) / MNIST_STD).reshape(1, 1, 28, 28).astype(np.float32)


def load_model(example_dir: Path) -> Any:
    """Import ``Net`` from the example's mnist.py and load its weights (weights only)."""
    import torch

    spec = importlib.util.spec_from_file_location("bench_mnist_model", example_dir / "mnist.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {example_dir / 'mnist.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.Net()
    state = torch.load(example_dir / "mnist_cnn.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model


def measure(
    example_dir: Path, png: Path, seconds: float, threads: int = 0, batch: int = 1
) -> dict[str, Any]:
    """Loop inference on ``batch`` copies of the image for ``seconds``; return images/s and the
    latency percentiles of one forward pass.

    ``threads`` > 0 pins torch's intra-op thread count; 0 keeps torch's default.
    """
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    model = load_model(example_dir)
    tensor = torch.from_numpy(np.repeat(preprocess(png), max(1, batch), axis=0))
    latencies: list[float] = []
    with torch.inference_mode():
        for _ in range(20):
            model(tensor)
        start = time.perf_counter()
        end = start + seconds
        now = start
        while now < end:
            model(tensor)
            after = time.perf_counter()
            latencies.append(after - now)
            now = after
    elapsed = now - start
    ordered = np.sort(np.asarray(latencies))
    return {
        "inferences": len(latencies),
        "batch": int(tensor.shape[0]),
        "seconds": round(elapsed, 3),
        "per_s": round(len(latencies) * int(tensor.shape[0]) / elapsed, 2),
        "p50_ms": round(float(np.percentile(ordered, 50)) * 1e3, 3),
        "p99_ms": round(float(np.percentile(ordered, 99)) * 1e3, 3),
        "torch_threads": torch.get_num_threads(),
        "torch_version": str(torch.__version__),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--example-dir", type=Path, required=True)
    parser.add_argument("--png", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--batch", type=int, default=1, help="images per forward pass")
    args = parser.parse_args()
    result = measure(args.example_dir, args.png, args.seconds, args.threads, args.batch)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
