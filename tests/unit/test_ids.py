"""Request ids are unique within a run and differ between runs."""

from __future__ import annotations

import subprocess
import sys

from marserve.ids import new_request_id


def test_unique_within_a_run() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)


def test_runs_get_different_prefixes() -> None:
    code = "from marserve.ids import new_request_id; print(new_request_id())"
    first, second = (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        .stdout.strip()
        .split("-")[0]
        for _ in range(2)
    )
    assert first != second
