"""Process trees read from /proc: descendants, summed RSS, and making sure a tree is gone."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

PROC = Path("/proc")


class Stat(NamedTuple):
    """The fields of /proc/<pid>/stat the harness uses (times in clock ticks).

    ``children`` is cutime + cstime: CPU of the process's already reaped children, so a
    short-lived helper a server spawns still counts as the server's.
    """

    state: str
    ppid: int
    utime: int
    stime: int
    children: int
    start: int


def parse_stat(text: str) -> Stat:
    """Parse the text of /proc/<pid>/stat.

    The command name sits in parentheses and may itself contain spaces or parentheses,
    so the fields after it are found from the last closing parenthesis.
    """
    rest = text[text.rindex(")") + 2 :].split()
    times = [int(value) for value in rest[11:15]]
    return Stat(rest[0], int(rest[1]), times[0], times[1], times[2] + times[3], int(rest[19]))


def _read_stat(pid: int) -> Stat | None:
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


def cmdline(pid: int) -> list[str]:
    """The process's argument vector ([] if it is gone)."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")[:-1]


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
            known[pid] = stat.start
    return known


def is_alive(pid: int, start: int | None = None) -> bool:
    """True when the pid exists, is not a zombie and (if given) started at ``start``."""
    stat = _read_stat(pid)
    if stat is None or stat[0] == "Z":
        return False
    return start is None or stat.start == start


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


def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def parse_cpu_line(line: str) -> int:
    """Busy clock ticks (user, nice, system, irq, softirq, steal) from /proc/stat's cpu line."""
    fields = [int(value) for value in line.split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal


def system_busy_s() -> float:
    """CPU seconds all CPUs have spent busy since boot."""
    with (PROC / "stat").open() as handle:
        return parse_cpu_line(handle.readline()) / _ticks()


def cpu_s(pids: Iterable[int]) -> float:
    """CPU seconds used so far by the given live processes and their reaped children."""
    total = 0
    for pid in pids:
        stat = _read_stat(pid)
        if stat is not None:
            total += stat.utime + stat.stime + stat.children
    return total / _ticks()


def own_cpu_s(pid: int) -> float:
    """CPU seconds used so far by one process itself (its threads, not its children)."""
    stat = _read_stat(pid)
    return 0.0 if stat is None else (stat.utime + stat.stime) / _ticks()


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU seconds at one instant: whole machine, a server tree, its root process (the front:
    it parses HTTP and hands work to the workers, the rest of the tree), our reaped children."""

    system_s: float
    tree_s: float
    children_s: float
    root_s: float = 0.0

    @classmethod
    def take(cls, root: int | None) -> CpuSample:
        times = os.times()
        tree = cpu_s(descendants(root)) if root is not None else 0.0
        front = own_cpu_s(root) if root is not None else 0.0
        return cls(system_busy_s(), tree, times.children_user + times.children_system, front)


def other_cpu_percent(before: CpuSample, after: CpuSample, wall_s: float, cpus: int) -> float:
    """Share of the machine's CPU used by anything but the server and our load generator."""
    if wall_s <= 0 or cpus <= 0:
        return 0.0
    system = after.system_s - before.system_s
    ours = (after.tree_s - before.tree_s) + (after.children_s - before.children_s)
    return max(0.0, system - ours) / (wall_s * cpus) * 100.0


def busy_percent(sample_s: float, cpus: int) -> float:
    """Share of the whole machine's CPU that was busy over the next ``sample_s`` seconds."""
    before, started = system_busy_s(), time.monotonic()
    time.sleep(sample_s)
    wall = time.monotonic() - started
    return (system_busy_s() - before) / (wall * max(cpus, 1)) * 100.0


def wait_quiet(limit_s: float, threshold_pct: float, cpus: int) -> float:
    """Wait (at most ``limit_s``) for a 1 s sample with machine CPU below ``threshold_pct``.

    Returns the last sample, so the caller can record how busy the machine still was.
    """
    deadline = time.monotonic() + limit_s
    busy = busy_percent(1.0, cpus)
    while busy >= threshold_pct and time.monotonic() < deadline:
        busy = busy_percent(1.0, cpus)
    return busy
