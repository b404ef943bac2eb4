"""Regenerates the shipped protobuf and gRPC modules in marserve/grpc/protos from their .protos.

Run ``python -m marserve.grpc.generate`` after editing a .proto (needs grpcio-tools, a build and
test dependency only), or ``--check`` to fail when a shipped module is out of date.

protoc's output is kept as generated except for one line per ``_pb2`` module: the file is added to
marserve's own descriptor pool (``protos/pool.py``) instead of protobuf's default pool. KServe's
v2 protocol and Triton's copy of it both define package ``inference``; in one default pool they
would collide, so a process could not import ``tritonclient.grpc`` and marserve's stubs together.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.resources
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent / "protos"
SOURCE_ROOT = PACKAGE_DIR.parents[2]  # the directory holding the ``marserve`` package
PROTO_PREFIX = "marserve/grpc/protos"
SERVICES = ("grpc_predict_v2", "inference", "management")
MESSAGES_ONLY = ("google_rpc_status",)
_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = (
    "from marserve.grpc.protos.pool import POOL as _POOL\nDESCRIPTOR = _POOL.AddSerializedFile("
)


def generated_names() -> list[str]:
    """Every file this script writes, relative to ``protos/``."""
    names = [
        f"{stem}_pb2{suffix}" for stem in SERVICES + MESSAGES_ONLY for suffix in (".py", ".pyi")
    ]
    names += [f"{stem}_pb2_grpc.py" for stem in SERVICES]
    return sorted(names)


def _protoc(out_root: Path) -> None:
    include = importlib.resources.files("grpc_tools") / "_proto"
    protos = [f"{PROTO_PREFIX}/{stem}.proto" for stem in SERVICES + MESSAGES_ONLY]
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{SOURCE_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"protoc failed:\n{result.stderr}")


def _use_private_pool(path: Path) -> None:
    text = path.read_text()
    if text.count(_DEFAULT_POOL) != 1:
        raise SystemExit(f"{path.name}: protoc output changed shape; update generate.py")
    path.write_text(text.replace(_DEFAULT_POOL, _PRIVATE_POOL))


def generate(out_dir: Path) -> list[Path]:
    """Write every generated module into ``out_dir`` and return their paths."""
    with tempfile.TemporaryDirectory(prefix="marserve-protoc-") as tmp:
        root = Path(tmp)
        _protoc(root)
        produced = root / PROTO_PREFIX
        for stem in MESSAGES_ONLY:
            (produced / f"{stem}_pb2_grpc.py").unlink(missing_ok=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in generated_names():
            source = produced / name
            if name.endswith("_pb2.py"):
                _use_private_pool(source)
            target = out_dir / name
            shutil.copyfile(source, target)
            written.append(target)
    return written


def stale(shipped_dir: Path = PACKAGE_DIR) -> list[str]:
    """Names of shipped modules that differ from what protoc produces now."""
    with tempfile.TemporaryDirectory(prefix="marserve-protos-") as tmp:
        fresh = Path(tmp)
        generate(fresh)
        return [
            name
            for name in generated_names()
            if not (shipped_dir / name).exists()
            or not filecmp.cmp(fresh / name, shipped_dir / name, shallow=False)
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report out-of-date modules")
    args = parser.parse_args(argv)
    if args.check:
        names = stale()
        for name in names:
            print(f"out of date: {PACKAGE_DIR / name}")
        return 1 if names else 0
    for path in generate(PACKAGE_DIR):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
