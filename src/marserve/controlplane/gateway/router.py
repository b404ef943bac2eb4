"""Per-request routing state: host table, revision choice, replica choice, admission, counts."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from time import perf_counter

from marserve.controlplane.breaker import Breaker, HoldQueue
from marserve.controlplane.errors import Rejected
from marserve.controlplane.gateway.balance import least_in_flight
from marserve.controlplane.gateway.hosts import HostTable, Resolved, pick_revision
from marserve.controlplane.gateway.metrics import GatewayMetrics
from marserve.controlplane.routing import Endpoint, RevisionRoute, ServiceRoute

RETRY_AFTER_S = 1


class RevisionState:
    """A revision's live state, kept across route updates: in-flight per replica, breakers, gate."""

    def __init__(self, namespace: str, route: RevisionRoute, hold_s: float) -> None:
        self.namespace = namespace
        self.route = route
        self.in_flight: dict[Endpoint, int] = {}
        self.breakers: dict[Endpoint, Breaker] = {}
        self.hold_s = hold_s
        self.gate = HoldQueue(timeout_s=hold_s) if hold_s > 0 else None
        self.refresh(route)

    def refresh(self, route: RevisionRoute) -> None:
        cc = route.container_concurrency
        if cc != self.route.container_concurrency:
            self.breakers.clear()
        self.route = route
        if cc > 0:
            for endpoint in route.endpoints:
                self.breakers.setdefault(endpoint, Breaker(cc))
        if self.gate is not None:
            if route.timeout_s:  # the revision's own timeout bounds the activator's wait
                self.gate.timeout_s = min(self.hold_s, route.timeout_s)
            self.gate.set_ready(bool(route.endpoints))


@dataclass(slots=True)
class Lease:
    """One admitted request: where it goes; the handler sets ``code`` before the lease ends."""

    service: ServiceRoute
    revision: RevisionState
    endpoint: Endpoint
    code: int = 0


class Router:
    """Routes requests by host; ``update`` swaps the table and keeps the live revision state."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        rand: Callable[[], float] = random.random,
        hold_s: float = 0.0,
    ) -> None:
        self.metrics = metrics
        self.rand = rand
        self.hold_s = hold_s
        self.table = HostTable(())
        self.states: dict[tuple[str, str], RevisionState] = {}

    def update(self, services: Sequence[ServiceRoute]) -> None:
        states: dict[tuple[str, str], RevisionState] = {}
        for service in services:
            for revision in service.revisions:
                key = (service.namespace, revision.name)
                state = self.states.get(key)
                if state is None:
                    state = RevisionState(service.namespace, revision, self.hold_s)
                else:
                    state.refresh(revision)
                states[key] = state
        for key, old in self.states.items():
            if key not in states and old.gate is not None:
                old.gate.set_ready(True)  # release held requests: they find no replica, 503
        self.table = HostTable(services)
        self.states = states

    def resolve(self, host: str) -> Resolved | None:
        return self.table.resolve(host)

    def _revision(self, resolved: Resolved) -> RevisionState:
        if not resolved.revisions:
            raise Rejected(503, f"service {resolved.service.name} has no revision taking traffic")
        revision = pick_revision(resolved.revisions, self.rand)
        return self.states[(resolved.service.namespace, revision.name)]

    async def _wait_ready(self, state: RevisionState) -> None:
        """Hold the request (activator) while the revision has no ready replica, if configured."""
        if not state.route.endpoints and state.gate is not None:
            try:
                await state.gate.wait_ready()
            except Rejected as rejected:  # 504 past the wait, 503 when the queue is full
                message = f"revision {state.route.name}: {rejected.message}"
                raise Rejected(rejected.status, message, retry_after=RETRY_AFTER_S) from None
        if not state.route.endpoints:
            message = f"revision {state.route.name} has no ready replica"
            raise Rejected(503, message, retry_after=RETRY_AFTER_S)

    @asynccontextmanager
    async def admit(self, resolved: Resolved) -> AsyncIterator[Lease]:
        """Choose revision and replica, hold a breaker slot, and count the request while it runs.

        A held request counts as in flight for its revision (as the activator reports it), so the
        autoscaler sees demand on a revision with no replica.
        """
        state = self._revision(resolved)
        namespace, name = state.namespace, state.route.name
        started = perf_counter()
        self.metrics.started(namespace, name)
        code = 500
        try:
            await self._wait_ready(state)
            endpoint = least_in_flight(state.route.endpoints, state.in_flight, self.rand)
            lease = Lease(resolved.service, state, endpoint)
            state.in_flight[endpoint] = state.in_flight.get(endpoint, 0) + 1
            try:
                breaker = state.breakers.get(endpoint)
                if breaker is None:
                    yield lease
                else:
                    async with breaker.admit():
                        yield lease
            finally:
                state.in_flight[endpoint] -= 1
                code = lease.code or 500
        except Rejected as rejected:
            code = rejected.status
            raise
        finally:
            self.metrics.finished(namespace, name, code, perf_counter() - started)
