"""The client's side of the data plane: direct connections to partition leaders.

One I/O thread per process runs an event loop with one connection per (leader endpoint,
lane): producers and consumers use separate lanes, so a fetch parked at the leader never
holds up a produce answer behind it on the same connection. Requests are written as they come
(several in flight), answers arrive in order, and each resolves a ``concurrent.futures.Future``
— the same kind of future a Ray call gives (``ObjectRef.future()``), so the producer's sender
and the consumer's fetcher wait on either transport alike.

A connection that fails fails every request on it with ``PartitionUnavailable`` (retriable):
the caller refreshes metadata from the Controller and sends again, as after a Ray failure.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any

from ray_broker import frames
from ray_broker.errors import BrokerError, LeaderUnreachable, PartitionUnavailable

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0

Endpoint = tuple[str, int]
Reply = tuple[frames.Result, memoryview]


class DataPlane:
    """The process's connections (see the module docstring); ``DataPlane.shared()``."""

    _shared: DataPlane | None = None
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls) -> DataPlane:
        with cls._shared_lock:
            if cls._shared is None or not cls._shared._thread.is_alive():
                cls._shared = DataPlane()
            return cls._shared

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._connections: dict[tuple[Endpoint, str], _Connection] = {}
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ray-broker-data-plane", daemon=True
        )
        self._thread.start()

    def request(
        self,
        endpoint: Endpoint,
        lane: str,
        session: Callable[[], str] | None,
        request: frames.Produce | frames.Fetch,
        body: Any = None,
        epoch: int = frames.NO_EPOCH,
    ) -> concurrent.futures.Future[Reply]:
        """Send ``request`` (and ``body``, Arrow IPC) to the leader at ``endpoint``; the future
        holds the answer's result and body, or raises PartitionUnavailable (connection lost)."""
        future: concurrent.futures.Future[Reply] = concurrent.futures.Future()
        token = session() if session is not None else ""
        self._loop.call_soon_threadsafe(
            self._send, endpoint, lane, token, request, body, epoch, future
        )
        return future

    def _send(
        self,
        endpoint: Endpoint,
        lane: str,
        token: str,
        request: Any,
        body: Any,
        epoch: int,
        future: concurrent.futures.Future[Reply],
    ) -> None:
        key = (endpoint, lane)
        connection = self._connections.get(key)
        if connection is None or connection.broken:
            connection = _Connection(endpoint, lambda: self._connections.pop(key, None))
            self._connections[key] = connection
        connection.send(token, request, body, epoch, future)

    def close_all(self) -> None:
        """Close every connection (tests; the process's end closes them anyway)."""

        def close() -> None:
            for connection in list(self._connections.values()):
                connection.fail(PartitionUnavailable("the data plane was closed"))
            self._connections.clear()

        self._loop.call_soon_threadsafe(close)


class _Connection(asyncio.BufferedProtocol):
    """One TCP connection to a leader; everything here runs on the data plane's loop.

    Answers are received straight into one buffer per frame (a BufferedProtocol): a fetch
    answer of many megabytes is copied once, from the socket, and read as Arrow in place.
    """

    def __init__(self, endpoint: Endpoint, forget: Callable[[], Any]) -> None:
        self.endpoint = endpoint
        self.broken = False
        self._forget = forget
        self._correlations = itertools.count()
        self._waiting: collections.deque[tuple[int, concurrent.futures.Future[Reply] | None]] = (
            collections.deque()
        )
        self._transport: asyncio.Transport | None = None
        self._backlog: list[list[bytes]] = []  # frames written once connected
        self._session: str | None = None  # the token the leader last welcomed
        self._length = bytearray(frames.LENGTH.size)
        self._frame: bytearray | None = None  # the frame being received (after its length)
        self._filled = 0
        asyncio.get_running_loop().create_task(self._open())

    def send(
        self,
        token: str,
        request: Any,
        body: Any,
        epoch: int,
        future: concurrent.futures.Future[Reply],
    ) -> None:
        if self.broken:
            future.set_exception(PartitionUnavailable(f"no connection to {self.endpoint}"))
            return
        if token != self._session:  # the first request, or a renewed session token
            self._session = token
            self._write(frames.Hello(session=token), None, frames.NO_EPOCH, None)
        self._write(request, body, epoch, future)

    def _write(
        self,
        request: Any,
        body: Any,
        epoch: int,
        future: concurrent.futures.Future[Reply] | None,
    ) -> None:
        correlation = next(self._correlations)
        parts = frames.frame(frames.Envelope(correlation, epoch, request), body)
        self._waiting.append((correlation, future))
        if self._transport is None:
            self._backlog.append(parts)
        else:
            self._transport.writelines(parts)

    async def _open(self) -> None:
        host, port = self.endpoint
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: self, host, port), CONNECT_TIMEOUT_S
            )
        except ConnectionRefusedError as exc:  # nobody listens there: the actor moved on
            self.fail(PartitionUnavailable(f"the leader at {host}:{port} is gone: {exc}"))
        except (OSError, asyncio.TimeoutError) as exc:  # no route: a firewall, a lost node
            self.fail(LeaderUnreachable(f"cannot connect to the leader at {host}:{port}: {exc}"))

    # --- the protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.broken:
            transport.close()
            return
        self._transport = transport
        for parts in self._backlog:
            transport.writelines(parts)
        self._backlog = []

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._frame is None:
            return memoryview(self._length)[self._filled :]
        return memoryview(self._frame)[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        try:
            if self._frame is None:
                if self._filled < frames.LENGTH.size:
                    return
                (size,) = frames.LENGTH.unpack(self._length)
                if size > frames.FRAME_MAX:
                    raise PartitionUnavailable(f"an answer of {size} bytes is over the limit")
                self._frame, self._filled = bytearray(size), 0
            if self._filled < len(self._frame):
                return
            payload, self._frame, self._filled = self._frame, None, 0
            self._answered(payload)
        except BrokerError as exc:  # a refused session, a broken answer: the leader said why
            self.fail(exc)
        except Exception as exc:  # a bug must still fail the waiting requests, never strand them
            logger.exception("data-plane connection to %s failed", self.endpoint)
            self.fail(PartitionUnavailable(f"the connection to {self.endpoint} failed: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(PartitionUnavailable(f"the connection to {self.endpoint} ended: {exc}"))

    def _answered(self, payload: bytearray) -> None:
        header, body = frames.split(payload)
        answer = frames.decode_answer(header)
        if not self._waiting:
            raise PartitionUnavailable("an answer nobody asked for")
        correlation, future = self._waiting.popleft()
        if answer.correlation != correlation:
            if isinstance(answer.result, frames.Failed):  # the leader closed on a bad frame
                raise frames.raised(answer.result)
            raise PartitionUnavailable(
                f"answer {answer.correlation} came for request {correlation}"
            )
        if future is None:  # a Hello: a refused session fails the requests behind it
            if isinstance(answer.result, frames.Failed):
                raise frames.raised(answer.result)
            return
        if not future.done():
            future.set_result((answer.result, body))

    def fail(self, error: BrokerError) -> None:
        """Fail every waiting request and forget this connection (the next request opens a
        new one)."""
        if not self.broken:
            self.broken = True
            self._forget()
        while self._waiting:
            _, future = self._waiting.popleft()
            if future is not None and not future.done():
                future.set_exception(error)
        if self._transport is not None:
            self._transport.close()
