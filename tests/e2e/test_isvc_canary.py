"""Canary rollout end to end through the gateway: the seeds' canary sample splits real traffic
about 20/80, tag hosts reach each revision, rollback and promote move it, with no failed request."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.autoscale_harness import Autoscaled, running_controller, wait_for
from tests.e2e.controlplane.conftest import kubectl_binary
from tests.e2e.isvc_harness import V1, sample

pytestmark = pytest.mark.slow

NAME = "torchserve"
HOST = f"{NAME}.default.example.com"
FIRST, SECOND = f"{NAME}-predictor-00001", f"{NAME}-predictor-00002"
TAGS = {"serving.kserve.io/enable-tag-routing": "true"}
N = 400  # 99 % binomial band for p = 0.2: 80 +- 2.576 x 8


def traffic(ctl: Autoscaled) -> list[tuple[str, int, str | None]]:
    pred = ctl.isvc(NAME)["status"]["components"]["predictor"]
    return [(t["revisionName"], t["percent"], t.get("tag")) for t in pred["traffic"]]


def send(ctl: Autoscaled, host: str, n: int) -> list[int]:
    async def run() -> list[int]:
        codes: list[int] = []
        async with httpx.AsyncClient(base_url=ctl.url, headers={"Host": host}) as client:
            gate = asyncio.Semaphore(8)

            async def one() -> None:
                async with gate:
                    r = await client.post("/v1/models/mnist:predict", content=V1, timeout=60)
                    codes.append(r.status_code)

            await asyncio.gather(*(one() for _ in range(n)))
        return codes

    return asyncio.run(run())


class Steady:
    """One request after another on the service's host while a test changes the rollout."""

    def __init__(self, ctl: Autoscaled) -> None:
        self.ctl, self.codes, self.stop = ctl, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.ctl.url, headers={"Host": HOST}, timeout=60) as client:
            while not self.stop.is_set():
                response = client.post("/v1/models/mnist:predict", content=V1)
                self.codes.append(response.status_code)

    def __enter__(self) -> Steady:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


def kubectl_get(ctl: Autoscaled) -> str:
    env = {"KUBECONFIG": str(ctl.home / "kubeconfig"), "HOME": str(ctl.home), "PATH": "/usr/bin"}
    done = subprocess.run([str(kubectl_binary()), "get", "isvc", NAME], env=env, text=True,
                          capture_output=True, timeout=60, check=True)  # fmt: skip
    return done.stdout


def rollout(ctl: Autoscaled, verb: str) -> str:
    """``marserve rollout VERB torchserve`` as a user runs it, against this controller."""
    env = {**os.environ, "MARSERVE_HOME": str(ctl.home)}
    done = subprocess.run([sys.executable, "-m", "marserve", "rollout", verb, NAME], env=env,
                          text=True, capture_output=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def row(table: str) -> dict[str, str]:
    """kubectl's first row by the header's column offsets (a blank cell is "")."""
    head, line = table.splitlines()[:2]
    starts = [m.start() for m in re.finditer(r"\S+", head)]
    ends = [*starts[1:], None]
    return {head[a:b].strip(): line[a:b].strip() for a, b in zip(starts, ends, strict=True)}


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Autoscaled]:
    yield from running_controller(tmp_path_factory.mktemp("canary-home"))


@pytest.fixture(scope="module")
def canary(ctl: Autoscaled, mnist_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    first = sample("torchserve.yaml", mnist_store.as_uri())
    first["metadata"]["annotations"] = dict(TAGS)
    ctl.apply(first)
    ctl.wait_ready(NAME)
    second_store = tmp_path_factory.mktemp("v2") / "store"
    shutil.copytree(mnist_store, second_store)
    obj = sample("torchserve-canary.yaml", second_store.as_uri())
    obj["metadata"]["annotations"] = dict(TAGS)
    with Steady(ctl) as steady:
        ctl.apply(obj)
        wait_for(lambda: traffic(ctl) == [(SECOND, 20, "latest"), (FIRST, 80, "prev")], "20/80")
        ctl.wait_ready(NAME)
    assert steady.codes and set(steady.codes) == {200}, steady.codes
    return obj


def test_the_split_is_in_status_and_kubectl(ctl: Autoscaled, canary: Any) -> None:
    pred = ctl.isvc(NAME)["status"]["components"]["predictor"]
    assert pred["latestRolledoutRevision"] == FIRST  # until the canary takes 100 %
    assert pred["latestReadyRevision"] == SECOND
    got = row(kubectl_get(ctl))
    assert got["PREV"] == "80" and got["LATEST"] == "20", got
    assert got["PREVROLLEDOUTREVISION"] == FIRST and got["LATESTREADYREVISION"] == SECOND


def test_real_traffic_splits_twenty_eighty(ctl: Autoscaled, canary: Any) -> None:
    before = ctl.answered(SECOND), ctl.answered(FIRST)
    codes = send(ctl, HOST, N)
    assert set(codes) == {200}
    latest, prev = ctl.answered(SECOND) - before[0], ctl.answered(FIRST) - before[1]
    assert latest + prev == N
    assert 59 <= latest <= 101, (latest, prev)


def test_tag_hosts_reach_each_revision(ctl: Autoscaled, canary: Any) -> None:
    for tag, revision in (("latest", SECOND), ("prev", FIRST)):
        before = ctl.answered(revision)
        assert set(send(ctl, f"{tag}-{NAME}-predictor.default.example.com", 20)) == {200}
        assert ctl.answered(revision) - before == 20


def test_rollback_then_promote(ctl: Autoscaled, canary: Any) -> None:
    with Steady(ctl) as steady:
        assert rollout(ctl, "rollback") == f"inferenceservice.serving.kserve.io/{NAME} patched"
        assert ctl.isvc(NAME)["spec"]["predictor"]["canaryTrafficPercent"] == 0
        wait_for(lambda: [t[:2] for t in traffic(ctl)] == [(SECOND, 0), (FIRST, 100)], "rollback")
        before = ctl.answered(SECOND)
        assert set(send(ctl, HOST, 40)) == {200}
        assert ctl.answered(SECOND) == before  # nothing untagged reaches the rolled-back one
        rollout(ctl, "promote")
        assert "canaryTrafficPercent" not in ctl.isvc(NAME)["spec"]["predictor"]
        wait_for(lambda: [t[:2] for t in traffic(ctl)] == [(SECOND, 100)], "promoted")
        label = "serving.knative.dev/revision"
        wait_for(lambda: all(p["metadata"]["labels"][label] == SECOND for p in ctl.pods(NAME)),
                 "the previous revision scaled down")  # fmt: skip
    assert steady.codes and set(steady.codes) == {200}, {c: steady.codes.count(c)
                                                          for c in set(steady.codes)}  # fmt: skip
    before = ctl.answered(SECOND)
    assert set(send(ctl, HOST, 40)) == {200}
    assert ctl.answered(SECOND) - before == 40
    pred = ctl.isvc(NAME)["status"]["components"]["predictor"]
    assert (pred["latestRolledoutRevision"], pred["previousRolledoutRevision"]) == (SECOND, FIRST)
    got = row(kubectl_get(ctl))
    assert (got["PREV"], got["LATEST"], got["LATESTREADYREVISION"]) == ("", "100", SECOND), got


def test_rollout_of_a_missing_service_names_it(ctl: Autoscaled) -> None:
    env = {**os.environ, "MARSERVE_HOME": str(ctl.home)}
    done = subprocess.run([sys.executable, "-m", "marserve", "rollout", "promote", "nosuch"],
                          env=env, text=True, capture_output=True, timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert "Error from server (NotFound)" in done.stderr and "nosuch" in done.stderr, done.stderr


def test_a_broken_canary_gets_no_traffic(ctl: Autoscaled, canary: Any, tmp_path: Path) -> None:
    obj = ctl.isvc(NAME)
    obj.pop("status", None)
    third = f"{NAME}-predictor-00003"
    obj["spec"]["predictor"]["model"]["storageUri"] = (tmp_path / "no-such-store").as_uri()
    obj["spec"]["predictor"]["canaryTrafficPercent"] = 20
    with Steady(ctl) as steady:
        ctl.apply(obj)
        ctl.wait_ready(NAME, "False")
        ready = next(c for c in ctl.isvc(NAME)["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "RevisionFailed" and third in ready["message"], ready
        # KServe's split names the latest *ready* revision: both entries are the old one
        split = traffic(ctl)
        assert {t[0] for t in split} == {SECOND} and sum(t[1] for t in split) == 100, split
        assert set(send(ctl, HOST, 40)) == {200}
        assert ctl.answered(third) == 0
    assert steady.codes and set(steady.codes) == {200}
