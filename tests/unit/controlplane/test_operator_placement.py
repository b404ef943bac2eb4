"""The operator hands each replica its own CUDA devices and never the same one twice."""

from __future__ import annotations

from pathlib import Path

from marserve.controlplane.config import ControllerConfig
from marserve.controlplane.operator import Reconciler, RevisionRuntime
from marserve.controlplane.runtime import ReplicaSpec, Resources
from marserve.controlplane.store import Store


def test_gpus_are_assigned_without_overlap(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    try:
        reconciler = Reconciler(store, ControllerConfig(home=tmp_path), gpus=3, env={})
        obj = {"metadata": {"name": "r-00001", "namespace": "default"}, "spec": {"isvc": {}}}
        rev = RevisionRuntime(obj, tmp_path / "rev")
        rev.spec = ReplicaSpec(("true",), {}, "", Resources(gpus=2))
        reconciler.services[("default", "r")] = {rev.name: rev}
        first = reconciler._replica(rev, "a")
        rev.replicas["a"] = first
        assert first.placement.gpus == (0, 1)
        assert reconciler.free_gpus() == [2]  # too few for a second replica: _scale stops
    finally:
        store.close()
