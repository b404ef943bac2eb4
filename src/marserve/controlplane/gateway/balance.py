"""Pick a replica: fewest requests in flight, ties broken by an injected random."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from marserve.controlplane.routing import Endpoint


def least_in_flight(
    endpoints: Sequence[Endpoint], in_flight: Mapping[Endpoint, int], rand: Callable[[], float]
) -> Endpoint:
    """The endpoint with the fewest in-flight requests; among equals, one chosen by ``rand()``."""
    if not endpoints:
        raise ValueError("no endpoint to choose from")
    if len(endpoints) == 1:
        return endpoints[0]
    lowest = min(in_flight.get(e, 0) for e in endpoints)
    ties = [e for e in endpoints if in_flight.get(e, 0) == lowest]
    if len(ties) == 1:
        return ties[0]
    return ties[min(int(rand() * len(ties)), len(ties) - 1)]
