"""Workers keep freed memory: a block freed and asked for again faults no new pages."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from marserve.workers import tuning

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")

# Allocates and touches four 8 MiB blocks, then frees them, ten times (a forward pass's
# activations, in small); prints the minor page faults of the last nine rounds. glibc's defaults
# give the pages back to the kernel (as unmapped blocks or a trimmed heap) and fault them in
# again every round; with the worker's settings the second round on reuses the heap's pages.
_PROBE = textwrap.dedent(
    """
    import ctypes, json, os, resource, sys
    from marserve.workers import tuning
    applied = tuning.keep_freed_memory(os.environ) if sys.argv[1] == "tuned" else False
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    size = 8 << 20
    def round_trip():
        blocks = [libc.malloc(size) for _ in range(4)]
        for block in blocks:
            ctypes.memset(block, 1, size)
        for block in blocks:
            libc.free(block)
    round_trip()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(9):
        round_trip()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"applied": applied, "faults": faults}))
    """
)


def _probe(mode: str, env: dict[str, str] | None = None) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_freed_blocks_are_reused_without_page_faults() -> None:
    plain = _probe("plain", env={"PATH": "/usr/bin:/bin"})
    tuned = _probe("tuned", env={"PATH": "/usr/bin:/bin"})
    assert tuned["applied"] is True
    pages = 9 * 4 * (8 << 20) // 4096
    assert int(str(plain["faults"])) >= pages // 2  # the defaults fault the block in every round
    assert int(str(tuned["faults"])) < pages // 20


@pytest.mark.parametrize(
    "variable",
    ["LD_PRELOAD", "GLIBC_TUNABLES", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"],
)
def test_an_operator_choice_of_allocator_settings_wins(variable: str) -> None:
    assert tuning.keep_freed_memory({variable: "set by the operator"}) is False


def test_operator_settings_reach_the_probe_unchanged() -> None:
    # the environment, not our mallopt, decides: nothing applied, the defaults still fault
    env = {"PATH": "/usr/bin:/bin", "GLIBC_TUNABLES": "glibc.malloc.check=0"}
    result = _probe("tuned", env=env)
    assert result["applied"] is False
    assert int(str(result["faults"])) >= 9 * 4 * (8 << 20) // 4096 // 2
