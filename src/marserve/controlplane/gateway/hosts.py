"""Host -> service and revisions: the ingress routing table built from the reconciler's routes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from marserve.controlplane.routing import RevisionRoute, ServiceRoute
from marserve.controlplane.traffic import Target, choose

CLUSTER_DOMAIN = "svc.cluster.local"


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a Host names: the service and the revisions it may go to (one for a tag host)."""

    service: ServiceRoute
    revisions: tuple[RevisionRoute, ...]
    tag: str | None = None


def normalize_host(value: str) -> str:
    """``Host``/``:authority`` sans port, final dot and case: ``A.b.com.:80`` -> ``a.b.com``."""
    host = value.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def untagged_hosts(service: ServiceRoute) -> frozenset[str]:
    """The service's own hosts, or Knative's defaults (external and cluster-local) when unset."""
    if service.hosts:
        return frozenset(normalize_host(h) for h in service.hosts)
    names = (service.name, f"{service.name}-predictor")
    domains = (service.domain, CLUSTER_DOMAIN)
    return frozenset(f"{n}.{service.namespace}.{d}".lower() for n in names for d in domains)


class HostTable:
    """Immutable lookup from a normalized host to what it routes to."""

    def __init__(self, services: Iterable[ServiceRoute]) -> None:
        table: dict[str, Resolved] = {}
        for service in services:
            untagged = tuple(r for r in service.revisions if r.percent > 0)
            for host in untagged_hosts(service):
                table[host] = Resolved(service, untagged)
            for revision in service.revisions:
                if revision.tag:
                    tagged = Resolved(service, (revision,), revision.tag)
                    table[service.tag_host(revision.tag).lower()] = tagged
        self._table = table

    def resolve(self, host: str) -> Resolved | None:
        """The route for a raw ``Host`` header value, or None when no service owns it."""
        return self._table.get(normalize_host(host))

    def __len__(self) -> int:
        return len(self._table)


def pick_revision(revisions: Sequence[RevisionRoute], rand: Callable[[], float]) -> RevisionRoute:
    """One revision by traffic percent (a single candidate is returned whatever its percent)."""
    if len(revisions) == 1:
        return revisions[0]
    name = choose([Target(r.name, r.percent, r.tag) for r in revisions], rand)
    return next(r for r in revisions if r.name == name)
