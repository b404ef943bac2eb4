"""One HTTP/2 connection (to a client or a replica): h2 state, socket I/O, flow control."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from marserve.controlplane.gateway.timeouts import within

WINDOW = 4 * 1024 * 1024  # per stream and per connection: room for large tensors without stalls
READ_SIZE = 256 * 1024
DRAIN_ABOVE = 256 * 1024  # bytes buffered for the socket before a sender waits
MAX_STREAMS = 1000  # concurrent streams a peer may open on one connection
MAX_HEADER_LIST = 64 * 1024  # decoded header bytes per request, as the HTTP/1.1 side's cap
Dispatch = Callable[[h2.events.Event], None]


class H2Side:
    """An h2 connection over asyncio streams; ``pump`` feeds received bytes to ``dispatch``."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, client_side: bool
    ) -> None:
        # Headers we send were validated when they arrived (client side) or come from a replica;
        # checking them again on the way out only costs time on every call.
        config = h2.config.H2Configuration(
            client_side=client_side,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=not client_side,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.reader = reader
        self.writer = writer
        self.closed = False
        self._window_waiters: dict[int, asyncio.Event] = {}
        self._flush_scheduled = False

    def start(self, preface: bytes = b"") -> None:
        """Send our preface and settings (and, server side, consume the client's ``preface``)."""
        self.conn.local_settings = h2.settings.Settings(
            client=self.conn.config.client_side,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
            },
        )
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(WINDOW - 65535)
        if preface:
            self.conn.receive_data(preface)
        self.flush()

    def flush(self) -> None:
        """Write pending frames at the end of this loop turn: one send for all streams' frames."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush_now)

    def flush_now(self) -> None:
        self._flush_scheduled = False
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def pump(self, dispatch: Dispatch, idle_s: Callable[[], float | None]) -> None:
        """Read frames until EOF, a protocol error or ``idle_s()`` seconds of silence."""
        try:
            while not self.closed:
                data = await within(self.reader.read(READ_SIZE), idle_s())
                if not data:
                    break
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    self.flush_now()  # h2's GOAWAY naming the error
                    break
                for event in events:
                    if isinstance(event, h2.events.WindowUpdated):
                        self._wake(event.stream_id)
                    elif isinstance(event, h2.events.RemoteSettingsChanged):
                        self._wake(0)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        self.closed = True
                    dispatch(event)
                self.flush()
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            self.closed = True
            self._wake(0)
            self.writer.close()

    def _wake(self, stream_id: int) -> None:
        if stream_id == 0:
            for waiter in self._window_waiters.values():
                waiter.set()
        elif (found := self._window_waiters.get(stream_id)) is not None:
            found.set()

    async def send_data(self, stream_id: int, data: bytes) -> None:
        """Send ``data`` as the peer's windows allow; ConnectionError once the stream is gone."""
        view = memoryview(data)
        while view:
            if self.closed:
                raise ConnectionError("HTTP/2 connection closed")
            try:
                room = min(
                    self.conn.local_flow_control_window(stream_id),
                    self.conn.max_outbound_frame_size,
                    len(view),
                )
            except h2.exceptions.StreamClosedError:
                raise ConnectionError(f"HTTP/2 stream {stream_id} closed") from None
            if room <= 0:
                waiter = self._window_waiters.setdefault(stream_id, asyncio.Event())
                waiter.clear()
                await waiter.wait()
                continue
            self.conn.send_data(stream_id, bytes(view[:room]))
            view = view[room:]
            if view:  # a large body: hand it to the socket now and wait while it is full
                self.flush_now()
                await self.writer.drain()
        self._window_waiters.pop(stream_id, None)
        self.flush()
        if self.writer.transport.get_write_buffer_size() > DRAIN_ABOVE:
            self.flush_now()
            await self.writer.drain()

    def room(self, stream_id: int) -> int:
        """Bytes the peer's windows accept on the stream now (0 once it is closed)."""
        try:
            return int(self.conn.local_flow_control_window(stream_id))
        except h2.exceptions.StreamClosedError:
            return 0

    def ack(self, stream_id: int, length: int) -> None:
        """Hand ``length`` flow-controlled bytes back to the peer once they were forwarded."""
        if length and not self.closed:
            try:
                self.conn.acknowledge_received_data(length, stream_id)
            except h2.exceptions.StreamClosedError:
                self.conn.increment_flow_control_window(length)
            self.flush()

    def send_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        self.conn.send_headers(stream_id, headers, end_stream=end)
        self.flush()

    def end_stream(self, stream_id: int) -> None:
        try:
            self.conn.end_stream(stream_id)
        except h2.exceptions.StreamClosedError:
            return
        self.flush()

    def reset(self, stream_id: int, code: int = 8) -> None:
        """RST_STREAM (CANCEL by default) unless the stream is already closed."""
        try:
            self.conn.reset_stream(stream_id, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self.flush()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.conn.close_connection()
                self.flush_now()
            except h2.exceptions.ProtocolError:
                pass
        self._wake(0)
        self.writer.close()
