"""Process trees read from /proc: descendants, summed RSS, and making sure a tree is gone."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")


def parse_stat(text: str) -> tuple[str, int, int]:
    """Return (state, ppid, start time in clock ticks) from the text of /proc/<pid>/stat.

    The command name sits in parentheses and may itself contain spaces or parentheses,
    so the fields after it are found from the last closing parenthesis.
    """
    rest = text[text.rindex(")") + 2 :].split()
    return rest[0], int(rest[1]), int(rest[19])


def _read_stat(pid: int) -> tuple[str, int, int] | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def parent_map() -> dict[int, int]:
    """Map every live pid to its parent pid."""
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read_stat(int(entry.name))
        if stat is not None:
            parents[int(entry.name)] = stat[1]
    return parents


def descendants(root: int, parents: dict[int, int] | None = None) -> list[int]:
    """Return ``root`` (if alive) followed by all its live descendants."""
    parents = parent_map() if parents is None else parents
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found = [root] if root in parents else []
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def rss_bytes(pid: int) -> int:
    """Resident set size of one process in bytes (0 if it is gone)."""
    try:
        fields = (PROC / str(pid) / "statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def tree_rss(root: int) -> tuple[int, list[int]]:
    """Summed RSS in bytes of ``root`` and its descendants, and the pids counted."""
    pids = descendants(root)
    return sum(rss_bytes(pid) for pid in pids), pids


def identify(pids: Iterable[int]) -> dict[int, int]:
    """Pair each live pid with its start time, so a reused pid is never mistaken for it."""
    known: dict[int, int] = {}
    for pid in pids:
        stat = _read_stat(pid)
        if stat is not None and stat[0] != "Z":
            known[pid] = stat[2]
    return known


def is_alive(pid: int, start: int | None = None) -> bool:
    """True when the pid exists, is not a zombie and (if given) started at ``start``."""
    stat = _read_stat(pid)
    if stat is None or stat[0] == "Z":
        return False
    return start is None or stat[2] == start


def wait_gone(procs: dict[int, int], timeout_s: float) -> dict[int, int]:
    """Wait until none of ``procs`` (pid -> start time) lives; return those left at the deadline."""
    pending = dict(procs)
    deadline = time.monotonic() + timeout_s
    while True:
        pending = {pid: st for pid, st in pending.items() if is_alive(pid, st)}
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(0.1)


def kill_all(procs: dict[int, int]) -> None:
    """SIGKILL each still-living process of ``procs``; only ever given processes we started."""
    for pid, start in procs.items():
        if is_alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
