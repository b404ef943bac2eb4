"""Process settings a worker gives itself before it imports torch: keep freed memory.

A worker runs the same shapes over and over, and glibc malloc's defaults fit that badly: a block
of more than 128 KiB is ``mmap``-ed and unmapped again when freed, so every request faults in
fresh zeroed pages. One Captum explanation of an MNIST image faults about 5,000 of them, which
costs several milliseconds, more under a hypervisor. :func:`keep_freed_memory` raises the mmap
and trim thresholds so that freed blocks stay in the heap for the next request. A worker's memory
then stays at its high-water mark instead of shrinking between requests: the usual trade of a
server, and what jemalloc or tcmalloc (which TorchServe's docs suggest) do as well.

It stands aside when the environment already tunes malloc (``MALLOC_*_``, ``GLIBC_TUNABLES``) or
preloads another allocator (``LD_PRELOAD``), so an operator can always choose otherwise.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Mapping

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

# mallopt(3) parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap (glibc's largest allowed value on 64-bit).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of the heap is given back only beyond this much.
TRIM_THRESHOLD = 256 << 20

_MALLOC_VARIABLES = (
    "GLIBC_TUNABLES",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
    "LD_PRELOAD",  # jemalloc, tcmalloc: the operator chose an allocator
)


def keep_freed_memory(environ: Mapping[str, str]) -> bool:
    """Raise glibc's mmap and trim thresholds; True when applied.

    Not applied off Linux, when the C library has no ``mallopt`` or refuses the values (musl),
    or when ``environ`` already tunes malloc or preloads another allocator.
    """
    if not sys.platform.startswith("linux") or any(environ.get(k) for k in _MALLOC_VARIABLES):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt answers 1 on success; both or neither, so a half-applied setting is not reported
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
