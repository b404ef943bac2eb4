"""Lets unmodified TorchServe handlers ``import ts...`` when TorchServe itself is not installed."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

SHIM_DIR = Path(__file__).resolve().parent / "ts_shim"


def _is_shim(spec: importlib.machinery.ModuleSpec) -> bool:
    locations = list(spec.submodule_search_locations or []) or [spec.origin or ""]
    return any(Path(loc).resolve().is_relative_to(SHIM_DIR) for loc in locations if loc)


def install_ts_shim() -> bool:
    """Put marserve's ``ts`` package on ``sys.path`` unless a real ``ts`` is importable.

    Returns whether the shim is the ``ts`` in use (installed now or by an earlier call).
    A real TorchServe installation is never shadowed: the shim is appended, not prepended,
    and only when ``ts`` cannot be found at all.
    """
    shim = str(SHIM_DIR)
    if shim in sys.path:
        return True
    spec = importlib.util.find_spec("ts")
    if spec is not None:
        return _is_shim(spec)
    sys.path.append(shim)
    importlib.invalidate_caches()
    return True
