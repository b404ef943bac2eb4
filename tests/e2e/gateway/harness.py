"""Gateway test harness: a Gateway on its own event loop thread, and upstream processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from marserve.controlplane.gateway import Gateway, GatewaySettings
from marserve.controlplane.routing import Endpoint, RevisionRoute, ServiceRoute

UPSTREAM = Path(__file__).resolve().parent / "upstream.py"


class GatewayThread:
    """Runs a real Gateway on 127.0.0.1:0 in a background loop; sync tests talk to it over TCP."""

    def __init__(
        self, settings: GatewaySettings | None = None, rand: Callable[[], float] | None = None
    ) -> None:
        self.registry = CollectorRegistry()
        kwargs: dict[str, Any] = {"registry": self.registry}
        if rand is not None:
            kwargs["rand"] = rand
        self.gateway = Gateway(settings, **kwargs)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.gateway.start("127.0.0.1", 0))

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"

    def update(self, services: Sequence[ServiceRoute]) -> None:
        async def apply() -> None:
            self.gateway.update(services)

        self.call(apply())

    def close(self) -> None:
        self.call(self.gateway.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Upstream:
    """``upstream.py`` as a child process (so a test can SIGKILL it)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, str(UPSTREAM), name], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())
        self.endpoint = Endpoint("127.0.0.1", self.port)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def service(
    name: str,
    revisions: Sequence[tuple[str, int, Sequence[Endpoint], str | None]],
    *,
    namespace: str = "default",
    protocol: str = "http",
    container_concurrency: int = 0,
) -> ServiceRoute:
    """A ServiceRoute like the reconciler builds: (revision, percent, endpoints, tag) per block."""
    routes = tuple(
        RevisionRoute(rev, pct, tuple(eps), tag, container_concurrency)
        for rev, pct, eps, tag in revisions
    )
    return ServiceRoute(namespace, name, "example.com", routes, protocol)  # type: ignore[arg-type]
