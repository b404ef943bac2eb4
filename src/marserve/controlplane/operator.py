"""The InferenceService operator: on every watched change and each tick, apply the pure plan."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from marserve.controlplane.config import ControllerConfig
from marserve.controlplane.controller import Operator
from marserve.controlplane.errors import AlreadyExists, NotFound
from marserve.controlplane.events import Note, event_object
from marserve.controlplane.pods import pod_name, pod_object
from marserve.controlplane.reconciler import (
    INVALID_SPEC,
    CreateRevision,
    Failure,
    Observed,
    Plan,
    ReplicaView,
    RevisionView,
    ScaleRevision,
    reconcile,
    scheduler_message,
)
from marserve.controlplane.replicas import (
    LIVENESS_S,
    Backoff,
    Placement,
    PodState,
    Replica,
    free_cpus,
    now_iso,
)
from marserve.controlplane.revisions import (
    ISVC_LABEL,
    REVISIONS,
    UID_ANNOTATION,
    number_of,
    pull_revision,
    revision_object,
    storage_settings,
    storage_uri_of,
    template_hash,
)
from marserve.controlplane.routing import RevisionRoute, RouteSink, ServiceRoute
from marserve.controlplane.runtime import (
    ReplicaSpec,
    SpecError,
    build_replica,
    check_runtime,
    cpu_set,
    predictor_model,
    resources_of,
)
from marserve.controlplane.store import Obj, Store

log = logging.getLogger("marserve.controlplane.operator")

ISVC = "inferenceservices.serving.kserve.io"
Scale = Callable[[Obj], int | Mapping[str, int] | None]
"""The autoscaler's replica count for a service, or per revision (None: minReplicas decides)."""
IMAGE = "marserve:latest"
DRAIN_S = 2.0
"""How long a replica being scaled away keeps serving what it had, out of the route, before it
stops (Knative's queue-proxy drains too): longer than a reconcile pass, so the gateway has the
new route before the replica goes."""
SCHEDULER = "default-scheduler"


def count_gpus(env: Mapping[str, str]) -> int:
    """GPUs this machine can hand out: ``MARSERVE_GPUS`` if set, else NVIDIA device nodes."""
    raw = env.get("MARSERVE_GPUS", "").strip()
    if raw.isdigit():
        return int(raw)
    return len(glob.glob("/dev/nvidia[0-9]*"))


@dataclass
class RevisionRuntime:
    """A revision's side of the world: its folder, storage pull, replica spec and replicas."""

    obj: Obj
    folder: Path
    storage: str = "pending"
    failure: Failure | None = None
    model_dir: Path | None = None
    spec: ReplicaSpec | None = None
    pull: asyncio.Task[Path] | None = None
    replicas: dict[str, Replica] = field(default_factory=dict)
    pending_pod: str | None = None
    pull_failures: int = 0
    retry_at: float = 0.0
    was_ready: bool = False
    draining: dict[str, float] = field(default_factory=dict)
    """Replicas being scaled away: out of the route since (monotonic), stopped after the drain."""

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def isvc(self) -> Obj:
        isvc: Obj = self.obj["spec"]["isvc"]
        return isvc

    def gpus(self) -> int:
        try:
            return resources_of(predictor_model(self.isvc)).gpus
        except SpecError:
            return 0

    def view(self) -> RevisionView:
        replicas = tuple(r.view() for r in self.replicas.values())
        hash_ = self.obj["metadata"]["annotations"]["marserve.dev/template-hash"]
        self.was_ready = self.was_ready or any(r.ready for r in replicas)
        failing = any(r.last_failure is not None and not r.ready for r in replicas)
        idle = self.was_ready and self.failure is None and not failing
        return RevisionView(self.name, hash_, self.storage, self.failure, self.gpus(), replicas,
                            idle)  # fmt: skip


class Reconciler:
    """Runs InferenceServices: revisions, replica processes, Pods, status and routes."""

    def __init__(
        self,
        store: Store,
        config: ControllerConfig,
        sink: RouteSink | None = None,
        *,
        backoff: Backoff | None = None,
        tick_s: float = 0.5,
        gpus: int | None = None,
        env: Mapping[str, str] | None = None,
        liveness_s: float = LIVENESS_S,
        scale: Scale | None = None,
        drain_s: float = DRAIN_S,
    ) -> None:
        self.store, self.config, self.sink = store, config, sink
        self.backoff = backoff or Backoff()
        self.tick_s = tick_s
        self.liveness_s = liveness_s
        self.scale = scale
        self.drain_s = drain_s
        self.env = dict(os.environ if env is None else env)
        self.gpus = count_gpus(self.env) if gpus is None else gpus
        self.services: dict[tuple[str, str], dict[str, RevisionRuntime]] = {}
        self.routes: dict[tuple[str, str], ServiceRoute] = {}
        self.wake = asyncio.Event()
        self.client: httpx.AsyncClient | None = None

    def folder(self, namespace: str, name: str) -> Path:
        return self.config.home / "isvc" / namespace / name

    # the loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        self.client = httpx.AsyncClient()
        self.adopt()
        watcher = asyncio.create_task(self._watch())
        try:
            while True:
                self.wake.clear()
                await self.pass_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.tick_s)
        finally:
            for replica in self._all_replicas():
                replica.release()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await self.client.aclose()

    async def _watch(self) -> None:
        async for _event in self.store.watch(ISVC):
            self.wake.set()

    async def pass_once(self) -> None:
        """Reconcile every InferenceService, tear down the deleted ones, publish the routes."""
        isvcs, _ = self.store.list(ISVC)
        seen: set[tuple[str, str]] = set()
        for isvc in isvcs:
            key = (isvc["metadata"].get("namespace", "default"), isvc["metadata"]["name"])
            seen.add(key)
            try:
                await self.reconcile_one(isvc)
            except Exception:  # one broken service never stops the others
                log.exception("reconciling %s/%s failed", *key)
        for key in [k for k in self.services if k not in seen]:
            await self.teardown(key)
        if self.sink is not None:
            self.sink.update(list(self.routes.values()))

    def adopt(self) -> None:
        """Find the revisions and replicas a previous controller left running."""
        revisions, _ = self.store.list(REVISIONS)
        for obj in sorted(revisions, key=number_of):
            try:
                self._adopt_revision(obj)
            except Exception:  # a damaged record never keeps the controller from starting
                log.exception("adopting revision %s failed", obj["metadata"].get("name"))

    def _adopt_revision(self, obj: Obj) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["labels"][ISVC_LABEL])
        rev = RevisionRuntime(obj, self.folder(*key) / meta["name"])
        self.services.setdefault(key, {})[rev.name] = rev
        try:
            record = json.loads((rev.folder / "model.json").read_text())
            rev.model_dir, rev.storage = Path(record["path"]), "ready"
            self._build_spec(rev)
        except (OSError, ValueError, KeyError):
            return
        if rev.spec is None:
            return
        for state in sorted((rev.folder / "replicas").glob("*/replica.json")):
            replica = self._replica(rev, state.parent.name)
            adopted = replica.adopt()
            rev.replicas[replica.name] = replica
            log.info("replica %s %s", replica.name, "adopted" if adopted else "to restart")

    # one service --------------------------------------------------------------------------
    def _observed(self, isvc: Obj, revs: dict[str, RevisionRuntime]) -> Observed:
        views = tuple(r.view() for r in sorted(revs.values(), key=lambda r: number_of(r.obj)))
        desired = self.scale(isvc) if self.scale is not None else None
        return Observed(views, self.config.domain, now_iso(), self.gpus, desired)

    async def reconcile_one(self, isvc: Obj) -> None:
        meta = isvc["metadata"]
        key = (meta.get("namespace", "default"), meta["name"])
        uid = str(meta.get("uid", ""))
        if any(r.obj["metadata"]["annotations"].get(UID_ANNOTATION) != uid
               for r in self.services.get(key, {}).values()):  # fmt: skip
            await self.teardown(key)  # deleted and created again under the same name
        revs = self.services.setdefault(key, {})
        plan = reconcile(isvc, self._observed(isvc, revs))
        for action in plan.actions:
            if isinstance(action, CreateRevision):
                self._create_revision(isvc, action, revs)
        for action in plan.actions:
            if isinstance(action, ScaleRevision):
                await self._scale(revs[action.name], action.replicas, plan)
        assert self.client is not None
        await asyncio.gather(
            *(r.step(self.client) for rev in revs.values() for r in rev.replicas.values())
        )
        plan = reconcile(isvc, self._observed(isvc, revs))
        self._write_pods(isvc, revs, plan)
        for rev in revs.values():
            for replica in rev.replicas.values():
                self._report(key[0], replica.name, replica.notes)
                replica.notes = []
        self._write_status(isvc, plan.status)
        self.routes[key] = self._route(isvc, plan.status, revs)

    def _create_revision(
        self, isvc: Obj, action: CreateRevision, revs: dict[str, RevisionRuntime]
    ) -> None:
        obj = revision_object(isvc, action.number)
        assert template_hash(isvc) == action.template_hash
        try:
            obj = self.store.create(REVISIONS, obj)
        except AlreadyExists:  # left by a service of the same name deleted mid-teardown
            self.store.delete(REVISIONS, obj["metadata"]["namespace"], action.name)
            obj = self.store.create(REVISIONS, obj)
        meta = isvc["metadata"]
        folder = self.folder(meta.get("namespace", "default"), meta["name"]) / action.name
        revs[action.name] = RevisionRuntime(obj, folder)
        log.info("revision %s created", action.name)

    async def _scale(self, rev: RevisionRuntime, count: int, plan: Plan) -> None:
        if rev.name in plan.unschedulable and rev.pending_pod is None:
            rev.pending_pod = pod_name(rev.name, seed="unschedulable")
            note = Note("FailedScheduling", scheduler_message(rev.gpus()), "Warning", SCHEDULER)
            self._report(rev.obj["metadata"]["namespace"], rev.pending_pod, [note])
        for name in list(rev.replicas)[:count]:
            rev.draining.pop(name, None)  # wanted again before it was stopped
        if count == 0:
            for name in list(rev.replicas):
                await self._drain(rev, name)
            return
        if not self._storage_ready(rev):
            return
        assert rev.spec is not None
        while len(rev.replicas) < count:
            if rev.spec.resources.gpus > len(self.free_gpus()):
                break  # the devices are taken by other replicas: this one stays unscheduled
            replica = self._replica(rev, pod_name(rev.name))
            rev.replicas[replica.name] = replica
            ns = rev.obj["metadata"]["namespace"]
            message = f"Successfully assigned {ns}/{replica.name} to marserve"
            self._report(ns, replica.name, [Note("Scheduled", message, component=SCHEDULER)])
        for name in list(rev.replicas)[count:]:
            await self._drain(rev, name)

    async def _drain(self, rev: RevisionRuntime, name: str) -> None:
        """Take a ready replica out of the route first (published at the end of this pass), and
        stop it once the requests the gateway had sent it had ``drain_s`` to finish."""
        since = rev.draining.setdefault(name, time.monotonic())
        if rev.replicas[name].ready and time.monotonic() - since < self.drain_s:
            return
        rev.draining.pop(name, None)
        await self._remove_replica(rev, name)

    def _storage_ready(self, rev: RevisionRuntime) -> bool:
        """Start the pull; on completion build the replica spec, or record the failure and
        retry after a back-off, as a crash-looping storage-initializer is."""
        retryable = rev.failure is not None and rev.failure.reason != INVALID_SPEC
        if rev.storage == "failed" and retryable and time.monotonic() >= rev.retry_at:
            rev.storage = "pending"
        if rev.storage == "pending":
            uri = storage_uri_of(rev.isvc)
            try:
                check_runtime(rev.isvc)
            except SpecError as exc:
                rev.storage, rev.failure = "failed", Failure(INVALID_SPEC, 1, str(exc), now_iso())
                return False
            if uri is None:
                message = "spec.predictor.model.storageUri: Required value"
                rev.storage, rev.failure = "failed", Failure(INVALID_SPEC, 1, message, now_iso())
                return False
            settings = storage_settings(self.config.home, self.env)
            rev.pull = asyncio.create_task(pull_revision(uri, rev.folder / "model", settings))
            rev.pull.add_done_callback(self._pulled)
            rev.storage = "pulling"
        if rev.storage == "pulling" and rev.pull is not None and rev.pull.done():
            try:
                rev.model_dir = rev.pull.result()
            except Exception as exc:  # StorageError, or anything the pull raised
                rev.storage, rev.failure = "failed", Failure("Error", 1, str(exc), now_iso())
                rev.retry_at = time.monotonic() + self.backoff.delay(rev.pull_failures)
                rev.pull_failures += 1
                log.warning("revision %s: storage failed: %s", rev.name, exc)
                return False
            rev.storage, rev.failure = "ready", None
            (rev.folder / "model.json").write_text(json.dumps({"path": str(rev.model_dir)}))
            self._build_spec(rev)
        return rev.storage == "ready" and rev.spec is not None

    def _pulled(self, task: asyncio.Task[Path]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved here; the next pass reads the result
        self.wake.set()

    def _build_spec(self, rev: RevisionRuntime) -> None:
        assert rev.model_dir is not None
        try:
            uri = storage_uri_of(rev.isvc) or ""
            rev.spec = build_replica(rev.isvc, rev.name, rev.model_dir, uri)
        except SpecError as exc:
            rev.storage, rev.failure = "failed", Failure(INVALID_SPEC, 1, str(exc), now_iso())

    def _replica(self, rev: RevisionRuntime, name: str) -> Replica:
        assert rev.spec is not None
        ns = rev.obj["metadata"]["namespace"]
        gpus = tuple(self.free_gpus()[: rev.spec.resources.gpus])
        pinned = sum(1 for r in self._all_replicas() if r.placement.cpus)
        cpu = rev.spec.resources.cpu
        cpus = cpu_set(cpu, free_cpus(), offset=pinned) if cpu else None
        return Replica(
            name,
            rev.folder / "replicas" / name,
            self.config.pods_dir / ns / name / "kserve-container.log",
            rev.spec,
            backoff=self.backoff,
            placement=Placement(tuple(cpus) if cpus else None, gpus),
            liveness_s=self.liveness_s,
        )

    def free_gpus(self) -> list[int]:
        taken = {g for r in self._all_replicas() for g in r.placement.gpus}
        return [g for g in range(self.gpus) if g not in taken]

    def _all_replicas(self) -> list[Replica]:
        return [r for revs in self.services.values() for v in revs.values()
                for r in v.replicas.values()]  # fmt: skip

    def _report(self, namespace: str, pod: str, notes: list[Note]) -> None:
        now = now_iso()
        for note in notes:
            self.store.create("events", event_object(namespace, pod, note, now))

    def _drop_events(self, namespace: str, pods: set[str]) -> None:
        events, _ = self.store.list("events", namespace)
        for event in events:
            if event.get("involvedObject", {}).get("name") in pods:
                with contextlib.suppress(NotFound):
                    self.store.delete("events", namespace, event["metadata"]["name"])

    async def _remove_replica(self, rev: RevisionRuntime, name: str) -> None:
        replica = rev.replicas.pop(name)
        await replica.stop()
        ns = rev.obj["metadata"]["namespace"]
        with contextlib.suppress(NotFound):
            self.store.delete("pods", ns, name)
        self._drop_events(ns, {name})
        shutil.rmtree(replica.state_dir, ignore_errors=True)
        shutil.rmtree(self.config.pods_dir / ns / name, ignore_errors=True)

    async def teardown(self, key: tuple[str, str]) -> None:
        """The InferenceService is gone: stop every process, delete its objects and folders."""
        revs = self.services.pop(key, {})
        self.routes.pop(key, None)
        for rev in revs.values():
            if rev.pull is not None:
                rev.pull.cancel()
            await asyncio.gather(*(r.stop() for r in rev.replicas.values()))
            for name in [*rev.replicas, *([rev.pending_pod] if rev.pending_pod else [])]:
                with contextlib.suppress(NotFound):
                    self.store.delete("pods", key[0], name)
                shutil.rmtree(self.config.pods_dir / key[0] / name, ignore_errors=True)
            with contextlib.suppress(NotFound):
                self.store.delete(REVISIONS, key[0], rev.name)
        pods, _ = self.store.list("pods", key[0], {ISVC_LABEL: key[1]})
        names = {p["metadata"]["name"] for p in pods} | {
            n for rev in revs.values() for n in [*rev.replicas, rev.pending_pod] if n
        }
        for pod in pods:  # whatever an earlier controller left, too
            with contextlib.suppress(NotFound):
                self.store.delete("pods", key[0], pod["metadata"]["name"])
        self._drop_events(key[0], names)
        shutil.rmtree(self.folder(*key), ignore_errors=True)
        log.info("inferenceservice %s/%s torn down", *key)

    # what the world sees ------------------------------------------------------------------
    def _write_pods(self, isvc: Obj, revs: dict[str, RevisionRuntime], plan: Plan) -> None:
        ns = isvc["metadata"].get("namespace", "default")
        now = now_iso()
        for rev in revs.values():
            args = list(rev.spec.container_args) if rev.spec else []
            for replica in rev.replicas.values():
                pod = pod_object(isvc, rev.name, replica.pod_state(), image=IMAGE, args=args,
                                 now=now, created=replica.running_since or now)  # fmt: skip
                self._put_pod(ns, pod)
            if rev.pending_pod and rev.name in plan.unschedulable:
                state = PodState(ReplicaView(rev.pending_pod), None, None, None, None, Placement())
                message = scheduler_message(rev.gpus())
                pod = pod_object(isvc, rev.name, state, image=IMAGE, args=args, now=now,
                                 created=now, unschedulable=message)  # fmt: skip
                self._put_pod(ns, pod)

    def _put_pod(self, ns: str, pod: Obj) -> None:
        name = pod["metadata"]["name"]
        try:
            old = self.store.get("pods", ns, name)
        except NotFound:
            self.store.create("pods", pod)
            return
        _keep_times(pod, old)
        if {k: old.get(k) for k in ("spec", "status")} == {
            k: pod.get(k) for k in ("spec", "status")
        }:
            return
        pod["metadata"] = {**old["metadata"], "labels": pod["metadata"]["labels"],
                           "annotations": pod["metadata"]["annotations"]}  # fmt: skip
        pod["metadata"].pop("resourceVersion", None)
        self.store.update("pods", pod)
        self.store.update_status("pods", pod)

    def _write_status(self, isvc: Obj, status: Obj) -> None:
        if isvc.get("status") == status:
            return
        meta = {k: v for k, v in isvc["metadata"].items() if k != "resourceVersion"}
        with contextlib.suppress(NotFound):  # deleted meanwhile: the next pass tears it down
            self.store.update_status(ISVC, {**isvc, "metadata": meta, "status": status})

    def _route(self, isvc: Obj, status: Obj, revs: dict[str, RevisionRuntime]) -> ServiceRoute:
        meta = isvc["metadata"]
        ns, name, domain = meta.get("namespace", "default"), meta["name"], self.config.domain
        pred = isvc.get("spec", {}).get("predictor") or {}
        cc = int(pred.get("containerConcurrency") or 0)
        raw_timeout = pred.get("timeout")
        timeout = float(raw_timeout) if isinstance(raw_timeout, int) and raw_timeout > 0 else None
        routes = []
        for entry in status["components"]["predictor"].get("traffic", []):
            rev = revs.get(entry["revisionName"])
            replicas = rev.replicas.values() if rev else []
            draining = rev.draining if rev else {}
            endpoints = tuple(r.endpoint for r in replicas
                              if r.ready and r.endpoint and r.name not in draining)  # fmt: skip
            routes.append(RevisionRoute(entry["revisionName"], entry["percent"], endpoints,
                                        entry.get("tag"), cc, timeout))  # fmt: skip
        latest = revs.get(status["components"]["predictor"]["latestCreatedRevision"])
        grpc = latest is not None and latest.spec is not None and latest.spec.protocol == "grpc-v2"
        hosts = frozenset({f"{name}.{ns}.{domain}", f"{name}-predictor.{ns}.{domain}",
                           f"{name}.{ns}.svc.cluster.local",
                           f"{name}-predictor.{ns}.svc.cluster.local"})  # fmt: skip
        return ServiceRoute(ns, name, domain, tuple(routes), "grpc" if grpc else "http", hosts)


def _keep_times(new: Obj, old: Obj) -> None:
    """Keep a condition's ``lastTransitionTime`` while its status is unchanged."""
    before = {c["type"]: c for c in (old.get("status") or {}).get("conditions") or []}
    for cond in (new.get("status") or {}).get("conditions") or []:
        prior = before.get(cond["type"])
        if prior is not None and prior.get("status") == cond["status"]:
            cond["lastTransitionTime"] = prior.get("lastTransitionTime")
    started = (old.get("status") or {}).get("startTime")
    if started and "startTime" in (new.get("status") or {}):
        new["status"]["startTime"] = started


def operator(sink: RouteSink | None = None, **options: Any) -> Operator:
    """The reconciler as a controller operator (``run_controller(config, [operator(gw)])``)."""

    async def run(store: Store, config: ControllerConfig) -> None:
        await Reconciler(store, config, sink, **options).run()

    return run
