"""The autoscaler's shell: samples the gateway's per-revision load, runs the pure KPA, scales.

Every ``sample_s`` it reads ``gateway.stats()`` and records each revision's time-averaged
in-flight requests (held requests included, as the activator reports them) or its answered
requests (``rps``) into :class:`~marserve.controlplane.autoscaler.Samples`; every
``defaults.tick`` it calls :func:`~marserve.controlplane.autoscaler.decide` per revision and hands
the counts to the reconciler through its ``scale`` hook, waking it when a count changes. A
request reaching a revision at zero pokes the decision at once (Knative's activator poke).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from marserve.controlplane.autoscaler import (
    Decision,
    Defaults,
    Samples,
    Settings,
    State,
    decide,
    initial_replicas,
    new_state,
    settings_from,
)
from marserve.controlplane.autoscaler_settings import CONCURRENCY, RPS
from marserve.controlplane.config import ControllerConfig
from marserve.controlplane.controller import Operator
from marserve.controlplane.errors import Invalid
from marserve.controlplane.gateway.metrics import RevisionStats
from marserve.controlplane.operator import Reconciler, RevisionRuntime
from marserve.controlplane.replicas import now_iso
from marserve.controlplane.routing import RouteSink
from marserve.controlplane.store import Obj, Store

log = logging.getLogger("marserve.controlplane.autoscaling")

Stats = Callable[[], Mapping[tuple[str, str], RevisionStats]]
Key = tuple[str, str]  # (namespace, revision)


@dataclass(frozen=True, slots=True)
class Target:
    """A revision the reconciler runs: whose it is, its frozen isvc, ready replicas, if routed."""

    namespace: str
    service: str
    revision: str
    isvc: Obj
    ready: int
    reachable: bool = True
    running: int = 0  # replicas it has (ready or not), so an adopted revision keeps its count


@dataclass
class Tracked:
    """One revision's autoscaler: settings, samples, decider state and the count it runs at."""

    service: str
    settings: Settings
    samples: Samples
    state: State
    desired: int
    last: Decision | None = None
    requests: int | None = None  # answered so far at the last sample (rps)
    second: int | None = None  # the second being summed up
    partial: float = 0.0  # its sum so far: recorded when the second is over (Knative's scrape)

    def add(self, now: float, value: float) -> None:
        second = math.floor(now)
        if self.second is not None and second > self.second:
            self.samples.record(self.second, self.partial)
            self.partial = 0.0
        self.second = second
        self.partial += value

    def flush(self, now: float) -> None:
        """Record the second so far at once (the activator's poke carries its stat)."""
        self.samples.record(now, self.partial)
        self.partial = 0.0


class _Gauges:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        reg = registry if registry is not None else CollectorRegistry()
        self.registry = reg

        def gauge(name: str, text: str) -> Gauge:
            return Gauge(f"marserve_autoscaler_{name}", text, ("namespace", "revision"),
                         registry=reg)  # fmt: skip

        self.desired = gauge("desired_replicas", "Replicas the autoscaler wants, by revision.")
        self.actual = gauge("actual_replicas", "Ready replicas, by revision.")
        self.panic = gauge("panic_mode", "1 while the revision's autoscaler is in panic mode.")
        self.stable = gauge("stable_value", "Observed concurrency (or rps), stable window.")
        self.panic_value = gauge("panic_value", "Observed concurrency (or rps), panic window.")
        self.target = gauge("target", "Per-replica target concurrency (or rps), by revision.")

    def all(self) -> tuple[Gauge, ...]:
        return (self.desired, self.actual, self.panic, self.stable, self.panic_value, self.target)


class Autoscaler:
    """Knative's KPA for every revision the reconciler runs; pure decisions, metrics, counts."""

    def __init__(
        self,
        stats: Stats,
        defaults: Defaults | None = None,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.stats = stats
        self.defaults = defaults or Defaults()
        self.tracked: dict[Key, Tracked] = {}
        self.gauges = _Gauges(registry)
        self._sampled_at: float | None = None
        self.changes: list[tuple[Key, int, int, str]] = []
        """(revision, from, to, reason) since the shell last wrote them out as Events."""

    def scale(self, isvc: Obj) -> dict[str, int]:
        """The reconciler's hook: the replica count of each of this service's known revisions."""
        meta = isvc["metadata"]
        ns, name = meta.get("namespace", "default"), meta["name"]
        return {
            k[1]: t.desired for k, t in self.tracked.items() if k[0] == ns and t.service == name
        }

    def sample(self, now: float) -> list[Key]:
        """Add one reading per tracked revision (time-averaged in-flight, or answered requests for
        ``rps``) to the second it falls in; returns the revisions at zero that have demand."""
        dt = 0.0 if self._sampled_at is None else max(0.0, min(now - self._sampled_at, 1.0))
        self._sampled_at = now
        stats = self.stats()
        poked: list[Key] = []
        for key, t in self.tracked.items():
            seen = stats.get(key)
            in_flight = max(0, seen.in_flight) if seen is not None else 0
            if t.settings.metric == RPS:
                answered = seen.requests if seen is not None else 0
                value = float(
                    max(0, answered - (t.requests if t.requests is not None else answered))
                )
                t.requests = answered
            else:
                value = in_flight * dt
            t.add(now, value)
            if t.desired == 0 and in_flight > 0:
                t.flush(now)
                poked.append(key)
        return poked

    def track(self, targets: Iterable[Target], now: float) -> None:
        """Start tracking new revisions, forget the gone ones."""
        live: set[Key] = set()
        for target in targets:
            key = (target.namespace, target.revision)
            live.add(key)
            if key not in self.tracked:
                self._start(key, target, now)
        for key in [k for k in self.tracked if k not in live]:
            del self.tracked[key]
            for gauge in self.gauges.all():
                with contextlib.suppress(KeyError):
                    gauge.remove(*key)

    def _start(self, key: Key, target: Target, now: float) -> None:
        notes = target.isvc.get("metadata", {}).get("annotations") or {}
        predictor = (target.isvc.get("spec") or {}).get("predictor") or {}
        try:
            settings = settings_from(notes, predictor, self.defaults)
        except Invalid as bad:
            log.warning("revision %s/%s is not autoscaled: %s", *key, bad)
            return
        self.tracked[key] = Tracked(target.service, settings, Samples(settings),
                                    new_state(settings, now, target.ready),
                                    max(initial_replicas(settings), target.running))  # fmt: skip
        self.gauges.target.labels(*key).set(settings.target)
        log.info("revision %s/%s autoscaled: %s target %.2f per replica, %d to %s", *key,
                 settings.metric, settings.target, settings.min_scale,
                 settings.max_scale or "unbounded")  # fmt: skip

    def decide(self, targets: Iterable[Target], now: float, only: set[Key] | None = None) -> bool:
        """One tick (or the activator's poke for ``only``): True when some count changed."""
        changed = False
        for target in targets:
            key = (target.namespace, target.revision)
            t = self.tracked.get(key)
            if t is None or (only is not None and key not in only):
                continue
            decision = decide(t.state, t.samples, now, target.ready, target.reachable)
            t.state, t.last = decision.state, decision
            want = decision.desired
            if want is not None and want < t.desired and decision.stable_value is None:
                want = None  # no reading yet (a restart adopting replicas): never down blind
            if want is not None and want != t.desired:
                log.info("revision %s/%s: %d -> %d replicas (%s)", *key, t.desired, want,
                         decision.reason)  # fmt: skip
                self.changes.append((key, t.desired, want, decision.reason))
                t.desired, changed = want, True
            self._export(key, t, target.ready, decision)
        return changed

    def _export(self, key: Key, t: Tracked, ready: int, decision: Decision) -> None:
        g = self.gauges
        g.desired.labels(*key).set(t.desired)
        g.actual.labels(*key).set(ready)
        g.panic.labels(*key).set(1 if decision.panic else 0)
        if decision.stable_value is not None:
            g.stable.labels(*key).set(decision.stable_value)
        if decision.panic_value is not None:
            g.panic_value.labels(*key).set(decision.panic_value)


def scale_event(key: Key, old: int, new: int, reason: str, now: str) -> Obj:
    """The Event a scale decision leaves on its revision (``kubectl get events`` lists it)."""
    namespace, revision = key
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{revision}.{secrets.token_hex(8)}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Revision",
            "namespace": namespace,
            "name": revision,
        },
        "reason": "SuccessfulRescale",
        "message": f"New size: {new} (was {old}); reason: {reason}",
        "type": "Normal",
        "source": {"component": "autoscaler", "host": "marserve"},
        "reportingComponent": "autoscaler",
        "reportingInstance": "marserve",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def _write_events(scaler: Autoscaler, store: Store) -> None:
    now = now_iso()
    for change in scaler.changes:
        try:
            store.create("events", scale_event(*change, now))
        except Exception:  # an Event is a report: losing one never stops scaling
            log.exception("writing the scale event of %s/%s failed", *change[0])
    scaler.changes.clear()


def targets_of(reconciler: Reconciler) -> list[Target]:
    """The revisions the reconciler runs now, with their ready replica counts."""
    found: list[Target] = []
    for (ns, name), revs in reconciler.services.items():
        route = reconciler.routes.get((ns, name))
        routed = {r.name for r in route.revisions} if route is not None else set()
        latest = max(revs.values(), key=_number, default=None)
        for rev in revs.values():
            kept = [r for r in rev.replicas.values() if r.name not in rev.draining]
            ready = sum(1 for r in kept if r.ready)
            reachable = rev.name in routed or rev is latest
            found.append(Target(ns, name, rev.name, rev.isvc, ready, reachable, len(kept)))
    return found


def _number(rev: RevisionRuntime) -> int:
    return int(rev.name.rsplit("-", 1)[1])


async def drive(
    scaler: Autoscaler,
    reconciler: Reconciler,
    *,
    sample_s: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Sample every ``sample_s``, decide every tick and on a poke, wake the reconciler."""
    next_tick = clock()
    while True:
        now = clock()
        targets = targets_of(reconciler)
        scaler.track(targets, now)
        poked = scaler.sample(now)
        changed = False
        if now >= next_tick:
            changed = scaler.decide(targets, now)
            next_tick = now + scaler.defaults.tick
        elif poked:
            changed = scaler.decide(targets, now, set(poked))
        if changed:
            reconciler.wake.set()
            _write_events(scaler, reconciler.store)
        await asyncio.sleep(sample_s)


def operator(
    sink: RouteSink | None,
    stats: Stats,
    *,
    defaults: Defaults | None = None,
    registry: CollectorRegistry | None = None,
    sample_s: float = 0.25,
    **options: Any,
) -> Operator:
    """The reconciler with the autoscaler supplying its replica counts, as one operator."""

    async def run(store: Store, config: ControllerConfig) -> None:
        scaler = Autoscaler(stats, defaults, registry=registry)
        reconciler = Reconciler(store, config, sink, scale=scaler.scale, **options)
        task = asyncio.create_task(drive(scaler, reconciler, sample_s=sample_s))
        try:
            await reconciler.run()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return run


__all__ = ["CONCURRENCY", "Autoscaler", "Target", "Tracked", "drive", "operator", "targets_of"]
