"""The pull's progress bar: rich on a terminal, nothing otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from marserve.storage.base import Progress


@contextmanager
def progress_bar(total: int, *, enabled: bool) -> Iterator[Progress]:
    """Yields the callback that advances the bar by a byte count."""
    if not enabled or not sys.stderr.isatty():
        yield lambda _count: None
        return
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn()) as bar:
        task = bar.add_task("pulling", total=total or None)
        yield lambda count: bar.advance(task, count)
