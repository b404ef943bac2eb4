"""CancelOnDisconnect: an inference request whose client leaves after its body stops there.

Without it a request runs to the end for nobody (its rows hold queue places meanwhile): the
ASGI server only reports the disconnect to whoever calls ``receive`` again. The middleware does
so for requests still unanswered after a tick, cancels the request's task when the client has
gone, and swallows that cancellation: the observer outside records 499 (no response), never 5xx.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The inference paths (TorchServe, KServe v1, v2); management calls always run to the end.
WATCHED = ("/predictions/", "/explanations/", "/v1/models/", "/v2/models/")
WATCH_AFTER_S = 0.05  # a request unanswered this long (to twice it) watches for its client


class _Watch:
    """One request: its task, and whether its body is in and its answer has started."""

    __slots__ = ("answered", "armed", "cancelled", "receive", "task", "watcher")

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.task = asyncio.current_task()
        self.watcher: asyncio.Task[None] | None = None
        self.armed = False  # the whole body is in
        self.answered = False
        self.cancelled = False

    async def receive_body(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request" and not message.get("more_body"):
            self.armed = True
        return message

    def begin(self) -> None:
        if self.watcher is None and self.armed and not self.answered:
            self.watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        message = await self.receive()
        if message["type"] == "http.disconnect" and not self.answered and self.task is not None:
            self.cancelled = True
            self.task.cancel()

    def close(self) -> None:
        if self.watcher is not None and not self.watcher.done():
            self.watcher.cancel()


class _InFlight:
    """Requests in flight; those still unanswered a tick after they arrived begin watching. A
    quick answer costs a set insert, never a task or a timer (the front is the bottleneck)."""

    def __init__(self) -> None:
        self._current: set[_Watch] = set()
        self._earlier: set[_Watch] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def add(self, watch: _Watch) -> None:
        self._current.add(watch)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def discard(self, watch: _Watch) -> None:
        self._current.discard(watch)
        self._earlier.discard(watch)
        watch.close()

    async def _sweep(self) -> None:
        try:
            while self._current or self._earlier:
                await asyncio.sleep(WATCH_AFTER_S)
                for watch in self._earlier:
                    watch.begin()
                self._earlier |= self._current
                self._current = set()
        finally:
            self._sweeper = None


class CancelOnDisconnect:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._in_flight = _InFlight()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("POST", "PUT")
            or not scope["path"].startswith(WATCHED)
        ):
            await self.app(scope, receive, send)
            return
        watch = _Watch(receive)

        async def answer(message: Message) -> None:
            watch.answered = True
            await send(message)

        self._in_flight.add(watch)
        try:
            await self.app(scope, watch.receive_body, answer)
        except asyncio.CancelledError:
            if not watch.cancelled or watch.task is None:
                raise
            watch.task.uncancel()  # our own cancellation: the client left, nothing to answer
        finally:
            self._in_flight.discard(watch)
