"""One side of a proxied session: buffered reads while logging in, then a byte relay.

An :class:`asyncio.Protocol` rather than streams: once two links are joined,
each chunk a side receives is written to the other from ``data_received``,
with no task switch per chunk (the relay's whole cost is the loop's
``recv``/``send``). Flow control is the transports': a full write buffer on
one side pauses reading on the other.
"""

from __future__ import annotations

import asyncio
import struct

from rsauth._pgwire import ProtocolViolation

__all__ = ["Link"]

_INT32 = struct.Struct("!i")
# The longest message accepted while logging in (a relayed session has no limit).
MAX_LOGIN_MESSAGE = 1 << 20


class Link(asyncio.Protocol):
    """A transport's protocol: ``read_*`` while logging in, :meth:`join` to relay."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Link | None = None
        # Bytes received and relayed to the peer since join().
        self.relayed = 0
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            self.relayed += len(data)
            peer.transport.write(data)
            return
        self._buffer += data
        self._wake()

    def eof_received(self) -> bool | None:
        self._ended = True
        self._wake()
        if self.peer is not None:
            self.peer.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._wake()
        if not self._closed.done():
            self._closed.set_result(None)
        if self.peer is not None:
            self.peer.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    # -- logging in -------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if self._ended:
                raise ConnectionError("the connection closed while logging in")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def read_message(self) -> tuple[bytes, bytes]:
        header = await self.read_exact(5)
        length = _INT32.unpack_from(header, 1)[0]
        if not 4 <= length <= MAX_LOGIN_MESSAGE:
            raise ProtocolViolation(f"message length {length} is out of range while logging in")
        return header[:1], await self.read_exact(length - 4)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    # -- relaying ---------------------------------------------------------

    def join(self, peer: Link) -> None:
        """Relay from now on: what this side receives goes to ``peer`` (bytes already
        buffered first)."""
        self.peer = peer
        if self._buffer and peer.transport is not None:
            self.relayed += len(self._buffer)
            peer.transport.write(bytes(self._buffer))
            self._buffer.clear()
        if self._ended:
            peer.close()

    async def closed(self) -> None:
        await asyncio.shield(self._closed)

    @property
    def is_closed(self) -> bool:
        return self._closed.done()

    def close(self) -> None:
        """Close gracefully (TLS: close_notify first), once: a second ``close()`` of an
        asyncio TLS transport detaches it, after which ``abort()`` would do nothing."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
