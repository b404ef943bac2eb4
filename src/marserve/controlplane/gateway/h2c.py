"""The h2c side (HTTP/2, prior knowledge): gRPC to replica gRPC ports, REST bridged to HTTP/1.1."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from typing import TYPE_CHECKING
from urllib.parse import quote

import h2.events

from marserve.controlplane.errors import Rejected
from marserve.controlplane.gateway import bridge
from marserve.controlplane.gateway.h2side import H2Side
from marserve.controlplane.gateway.pool import Pool
from marserve.controlplane.gateway.router import Router
from marserve.controlplane.gateway.timeouts import within

if TYPE_CHECKING:
    from marserve.controlplane.gateway.proxy import Limits, OwnHandler

PREFACE_HEAD = b"PRI * HTTP/2.0\r\n\r\n"
PREFACE_TAIL = b"SM\r\n\r\n"
HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
# gRPC's HTTP-to-status mapping (doc/http-grpc-status-mapping.md), as an ingress answers.
GRPC_CODES = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
Item = tuple[str, object, int]


class Upstream:
    """A multiplexed HTTP/2 connection to one replica's gRPC port."""

    def __init__(self, side: H2Side) -> None:
        self.side = side
        self.streams: dict[int, Pipe] = {}
        self.task = asyncio.create_task(side.pump(self._dispatch, lambda: None))
        self.task.add_done_callback(lambda _: self._lost())

    @classmethod
    async def connect(cls, host: str, port: int, timeout_s: float) -> Upstream:
        reader, writer = await within(asyncio.open_connection(host, port), timeout_s)
        side = H2Side(reader, writer, client_side=True)
        side.start()
        return cls(side)

    def usable(self) -> bool:
        conn = self.side.conn
        return (
            not self.side.closed
            and conn.open_outbound_streams < conn.remote_settings.max_concurrent_streams
        )

    def open(self, pipe: Pipe, headers: list[tuple[bytes, bytes]]) -> int:
        stream_id = self.side.conn.get_next_available_stream_id()
        self.streams[stream_id] = pipe
        self.side.send_headers(stream_id, headers, end=False)
        return stream_id

    def _dispatch(self, event: h2.events.Event) -> None:
        stream_id = getattr(event, "stream_id", 0)
        pipe = self.streams.get(stream_id)
        if pipe is None:
            if isinstance(event, h2.events.DataReceived):
                self.side.ack(stream_id, event.flow_controlled_length)
            return
        if isinstance(event, h2.events.ResponseReceived):  # trailers-only when it ends the stream
            pipe.down.put_nowait(("headers", event.headers, int(event.stream_ended is not None)))
        elif isinstance(event, h2.events.DataReceived):
            pipe.down.put_nowait(("data", event.data, event.flow_controlled_length))
        elif isinstance(event, h2.events.TrailersReceived):
            pipe.down.put_nowait(("trailers", event.headers, 0))
        elif isinstance(event, h2.events.StreamEnded):
            pipe.down.put_nowait(("end", None, 0))
            self.streams.pop(stream_id, None)
        elif isinstance(event, h2.events.StreamReset):
            pipe.down.put_nowait(("reset", None, event.error_code))
            self.streams.pop(stream_id, None)

    def _lost(self) -> None:
        for pipe in self.streams.values():
            pipe.down.put_nowait(("reset", None, -1))
        self.streams.clear()


class Pipe:
    """One client stream and its replica stream, relayed in both directions."""

    def __init__(self, proxy: H2Proxy, client: H2Side, stream_id: int, peer: str) -> None:
        self.proxy = proxy
        self.client = client
        self.stream_id = stream_id
        self.peer = peer
        self.up: asyncio.Queue[Item] = asyncio.Queue()
        self.down: asyncio.Queue[Item] = asyncio.Queue()
        self.answered = False
        self.carry: Item | None = None
        self.task: asyncio.Task[None] | None = None

    async def run(self, headers: list[tuple[bytes, bytes]]) -> None:
        fields = dict(headers)
        grpc = fields.get(b"content-type", b"").startswith(b"application/grpc")
        try:
            await self._route(headers, fields)
        except Rejected as rejected:
            self._error(rejected, grpc)
        finally:
            self.proxy.pipes.get(self.client, {}).pop(self.stream_id, None)

    async def _route(self, headers: list[tuple[bytes, bytes]], fields: dict[bytes, bytes]) -> None:
        authority = (fields.get(b":authority") or fields.get(b"host") or b"").decode("latin-1")
        if not authority:
            raise Rejected(400, "missing :authority")
        if not self.proxy.authorized(fields.get(b"authorization", b"")):
            raise Rejected(401, "missing or invalid bearer token")
        resolved = self.proxy.router.resolve(authority)
        if resolved is None:
            self._own(authority, fields)
            return
        if resolved.service.protocol != "grpc":
            async with self.proxy.router.admit(resolved) as lease:
                lease.code = await bridge.relay(self, lease.endpoint, headers)
            return
        async with self.proxy.router.admit(resolved) as lease:
            endpoint = lease.endpoint
            if endpoint.grpc_port is None:
                raise Rejected(502, f"replica {endpoint.host}:{endpoint.port} has no gRPC port")
            upstream = await self.proxy.upstream(endpoint.host, endpoint.grpc_port)
            forwarded = self._forwarded(headers)
            lease.code = await self._relay(upstream, upstream.open(self, forwarded))

    def _forwarded(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        drop = HOP | ({b"authorization"} if self.proxy.token else set())
        out = [(k, v) for k, v in headers if k not in drop and k != b"x-forwarded-for"]
        prior = [v for k, v in headers if k == b"x-forwarded-for"]
        out.append((b"x-forwarded-for", b", ".join([*prior, self.peer.encode()])))
        return out

    def _send_queued(self, side: H2Side, up_id: int) -> bool:
        """Forward what the client already sent while it fits the windows; True at its end.

        A unary call's request has usually arrived whole: then no sender task is needed.
        """
        while not self.up.empty():
            item = self.up.get_nowait()
            kind, value, length = item
            if kind == "data":
                assert isinstance(value, bytes)
                if len(value) > min(side.room(up_id), side.conn.max_outbound_frame_size):
                    self.carry = item  # the sender task sends it first, as windows allow
                    return False
                side.conn.send_data(up_id, value)
                side.flush()
                self.client.ack(self.stream_id, length)
                continue
            if kind == "end":
                side.end_stream(up_id)
            else:
                side.reset(up_id)
            return True
        return False

    async def _relay(self, upstream: Upstream, up_id: int) -> int:
        if self._send_queued(upstream.side, up_id):
            return await self._send_down(upstream.side, up_id)
        sender = asyncio.create_task(self._send_up(upstream.side, up_id))
        try:
            return await self._send_down(upstream.side, up_id)
        finally:
            if not sender.done():
                sender.cancel()
                upstream.side.reset(up_id)
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender

    async def _send_up(self, side: H2Side, up_id: int) -> None:
        while True:
            if self.carry is not None:
                (kind, value, length), self.carry = self.carry, None
            else:
                kind, value, length = await self.up.get()
            if kind == "data":
                assert isinstance(value, bytes)
                await side.send_data(up_id, value)
                self.client.ack(self.stream_id, length)
            elif kind == "end":
                side.end_stream(up_id)
                return
            else:
                side.reset(up_id)
                return

    async def _send_down(self, side: H2Side, up_id: int) -> int:
        status = 502
        while True:
            kind, value, length = await self.down.get()
            if kind == "headers":
                assert isinstance(value, list)
                status = int(dict(value).get(b":status", b"502"))
                ended = bool(length)
                self.client.send_headers(
                    self.stream_id, [(k, v) for k, v in value if k not in HOP], end=ended
                )
                self.answered = True
                if ended:
                    return status
            elif kind == "data":
                assert isinstance(value, bytes)
                await self.client.send_data(self.stream_id, value)
                side.ack(up_id, length)
            elif kind == "trailers":
                assert isinstance(value, list)
                self.client.send_headers(self.stream_id, value, end=True)
                return status
            elif kind == "end":
                self.client.end_stream(self.stream_id)
                return status
            elif not self.answered:
                raise Rejected(
                    502, "replica reset the stream or lost the connection before answering"
                )
            else:
                self.client.reset(self.stream_id, 2 if length < 0 else length)
                return status

    def _own(self, authority: str, fields: dict[bytes, bytes]) -> None:
        answer = self.proxy.own(authority, fields.get(b":method", b""), fields.get(b":path", b""))
        if answer is None:
            name = authority.split(":")[0].lower()
            raise Rejected(404, f"no InferenceService is served at host {name!r}")
        status, content_type, body = answer
        self._respond(status, content_type, body)

    def _respond(self, status: int, content_type: bytes, body: bytes) -> None:
        headers = [(b":status", str(status).encode()), (b"content-type", content_type)]
        headers.append((b"content-length", str(len(body)).encode()))
        self.client.send_headers(self.stream_id, headers, end=not body)
        if body:  # small answers: fit in the initial window
            self.client.conn.send_data(self.stream_id, body, end_stream=True)
            self.client.flush()
        self.answered = True

    def _error(self, rejected: Rejected, grpc: bool) -> None:
        if self.answered or self.client.closed:
            return
        if grpc:
            code = GRPC_CODES.get(rejected.status, 2)
            headers = [
                (b":status", b"200"),
                (b"content-type", b"application/grpc"),
                (b"grpc-status", str(code).encode()),
                (b"grpc-message", quote(rejected.message, safe=" ").encode()),
            ]
            self.client.send_headers(self.stream_id, headers, end=True)
            self.answered = True
        else:
            body = json.dumps({"error": rejected.message}).encode()
            self._respond(rejected.status, b"application/json", body)
        self.client.reset(self.stream_id, 0)


class H2Proxy:
    """Serves h2c connections; pools one multiplexed connection per replica gRPC port."""

    def __init__(
        self, router: Router, pool: Pool, token: str | None, limits: Limits, own: OwnHandler
    ) -> None:
        self.router = router
        self.pool = pool
        self.token = token.encode() if token else None
        self.limits = limits
        self.own = own
        self.pipes: dict[H2Side, dict[int, Pipe]] = {}
        self._upstreams: dict[tuple[str, int], asyncio.Task[Upstream]] = {}

    def authorized(self, value: bytes) -> bool:
        if self.token is None:
            return True
        scheme, _, credential = value.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self.token)

    async def upstream(self, host: str, port: int) -> Upstream:
        key = (host, port)
        task = self._upstreams.get(key)
        if task is not None and task.done() and (task.exception() or not task.result().usable()):
            task = None
        if task is None:
            task = asyncio.create_task(Upstream.connect(host, port, 5.0))
            self._upstreams[key] = task
        try:
            return await asyncio.shield(task)
        except (OSError, TimeoutError) as error:
            self._upstreams.pop(key, None)
            raise Rejected(502, f"replica {host}:{port} is unreachable: {error}") from None

    def retain(self, keys: set[tuple[str, int | None]]) -> None:
        for key in [k for k in self._upstreams if k not in keys]:
            task = self._upstreams.pop(key)
            if task.done() and not task.exception():
                task.result().side.close()

    async def close(self) -> None:
        for task in self._upstreams.values():
            if task.done() and not task.exception():
                task.result().side.close()
        self._upstreams.clear()

    async def serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        client = H2Side(reader, writer, client_side=False)
        pipes: dict[int, Pipe] = {}
        self.pipes[client] = pipes
        client.start(PREFACE_HEAD + PREFACE_TAIL)
        idle = self.limits.response_timeout_s

        def dispatch(event: h2.events.Event) -> None:
            self._dispatch(client, pipes, peer, event)

        try:
            await client.pump(dispatch, lambda: None if pipes else idle)
        finally:
            for pipe in list(pipes.values()):
                if pipe.task is not None:
                    pipe.task.cancel()
            self.pipes.pop(client, None)

    def _dispatch(
        self, client: H2Side, pipes: dict[int, Pipe], peer: str, event: h2.events.Event
    ) -> None:
        stream_id = getattr(event, "stream_id", 0)
        if isinstance(event, h2.events.RequestReceived):
            new = pipes[stream_id] = Pipe(self, client, stream_id, peer)
            new.task = asyncio.create_task(new.run(list(event.headers)))
            return
        pipe = pipes.get(stream_id)
        if isinstance(event, h2.events.DataReceived):
            if pipe is None:
                client.ack(stream_id, event.flow_controlled_length)
            else:
                pipe.up.put_nowait(("data", event.data, event.flow_controlled_length))
        elif pipe is None:
            return
        elif isinstance(event, h2.events.StreamEnded):
            pipe.up.put_nowait(("end", None, 0))
        elif isinstance(event, h2.events.StreamReset):
            pipe.answered = True  # the client gave up: nothing more may be sent on the stream
            if pipe.task is not None:
                pipe.task.cancel()
