"""One data-plane connection to a partition replica, as an asyncio protocol: requests are
written as they come, answers are received straight into one buffer per frame (a fetch answer
of many megabytes is copied once, from the socket, and read as Arrow in place) and resolve
their ``concurrent.futures.Future`` in order.

Clients drive it from the data plane's I/O thread (``ray_broker/data_plane.py``); a leader
drives it from its own event loop to push records to its followers
(``actors/partition/replication_links.py``). A connection that fails fails every request on
it: ``PartitionUnavailable`` (retriable) when the replica went away, ``LeaderUnreachable``
when its address cannot be reached at all.

When Ray's TLS is on (``RAY_USE_TLS`` with ``RAY_TLS_SERVER_CERT``, ``RAY_TLS_SERVER_KEY`` and
``RAY_TLS_CA_CERT``, as every node of such a cluster has), data-plane sockets use TLS with the
same files, both ways, as Ray's gRPC does: the listener requires a certificate of the
cluster's CA and so does the client. Host names are not checked — the CA is the cluster's
own, and replicas move between nodes.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import itertools
import logging
import os
import ssl
from collections.abc import Callable
from typing import Any

from ray_broker import frames
from ray_broker.errors import BrokerError, LeaderUnreachable, PartitionUnavailable

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
# How long a replica whose data-plane address cannot be reached (or that cannot say where it
# listens) gets Ray calls instead, before the data plane is tried again — for clients and
# leaders alike.
RAY_FALLBACK_S = 10.0

Endpoint = tuple[str, int]
Reply = tuple[frames.Result, memoryview]


@functools.cache
def ray_tls() -> tuple[ssl.SSLContext, ssl.SSLContext] | None:
    """(listener's, client's) TLS contexts from Ray's TLS settings; None when Ray's TLS is off.

    Raises:
        OSError, ssl.SSLError: Ray's TLS is on but its files cannot be read.
    """
    if os.environ.get("RAY_USE_TLS", "0").lower() not in ("1", "true"):
        return None
    cert, key = os.environ["RAY_TLS_SERVER_CERT"], os.environ["RAY_TLS_SERVER_KEY"]
    authority = os.environ.get("RAY_TLS_CA_CERT")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=authority)
    server.load_cert_chain(cert, key)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=authority)
    client.load_cert_chain(cert, key)
    client.check_hostname = False
    return server, client


class Connection(asyncio.BufferedProtocol):
    """See the module docstring; every method runs on the loop that opened it. ``forget``
    is called once when the connection breaks."""

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
            tls = ray_tls()
            await asyncio.wait_for(
                loop.create_connection(lambda: self, host, port, ssl=tls[1] if tls else None),
                CONNECT_TIMEOUT_S,
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

    async def call(self, token: str, request: Any, body: Any = None) -> Reply:
        """Send ``request`` and await its answer on this loop.

        Raises:
            BrokerError: the answer was ``Failed`` (the replica's typed error), or the
                connection broke (PartitionUnavailable / LeaderUnreachable).
        """
        future: concurrent.futures.Future[Reply] = concurrent.futures.Future()
        self.send(token, request, body, frames.NO_EPOCH, future)
        result, payload = await asyncio.wrap_future(future)
        if isinstance(result, frames.Failed):
            raise frames.raised(result)
        return result, payload
