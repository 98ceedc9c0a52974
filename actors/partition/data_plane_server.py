"""A partition replica's data-plane listener: produce and fetch over direct connections.

It runs on the actor's own event loop and binds to the node's Ray address (loopback stays
loopback; nothing listens on 0.0.0.0). Each request is served by the same actor calls Ray
serves (``serve``), so produce and fetch are written once whatever the transport.

Per connection: ``Hello`` first, within ``PRE_AUTH_TIMEOUT_S`` and in a frame of at most
``PRE_AUTH_FRAME_MAX`` bytes, read and refused before anything larger is buffered; on a
secured broker its session token must authenticate. Then requests, up to
``IN_FLIGHT_MAX`` at once, answered in order. A garbage or oversized frame gets a ``Failed``
answer and closes its own connection only; an idle one closes after ``IDLE_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ray_broker import frames
from ray_broker.data_plane_connection import ray_tls
from ray_broker.errors import BrokerError, InvalidRequest

logger = logging.getLogger(__name__)

PRE_AUTH_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 600.0
CONNECTIONS_MAX = 1_000
IN_FLIGHT_MAX = 64

Serve = Callable[[str, frames.Envelope, memoryview], Awaitable[tuple[frames.Result, Any]]]


class DataPlaneServer:
    """``serve(session, envelope, body)`` answers one request as ``(result, body)``;
    ``authenticate(session)`` raises AuthenticationFailed for a session it refuses and
    returns the ``Welcome`` for one it takes."""

    def __init__(
        self,
        name: str,
        serve: Serve,
        authenticate: Callable[[str], Awaitable[frames.Welcome]],
    ) -> None:
        self.name = name
        self._serve = serve
        self._authenticate = authenticate
        self._server: asyncio.Server | None = None
        self._starting: asyncio.Lock = asyncio.Lock()
        self._connections: set[asyncio.Task[None]] = set()
        self.endpoint: tuple[str, int] | None = None

    async def start(self, host: str) -> tuple[str, int]:
        """Listen on ``host`` (a free port) once; returns the endpoint."""
        async with self._starting:
            if self._server is None:
                tls = ray_tls()  # Ray's TLS on: the cluster's certificates, both ways
                self._server = await asyncio.start_server(
                    self._accept,
                    host,
                    0,
                    ssl=tls[0] if tls else None,
                    ssl_handshake_timeout=PRE_AUTH_TIMEOUT_S if tls else None,
                )
                port = self._server.sockets[0].getsockname()[1]
                self.endpoint = (host, port)
        assert self.endpoint is not None
        return self.endpoint

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._connections):
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= CONNECTIONS_MAX:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._connection(reader, writer)
        finally:
            self._connections.discard(task)
            writer.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answers: asyncio.Queue[asyncio.Future[list[bytes]]] = asyncio.Queue(IN_FLIGHT_MAX)
        replies = asyncio.get_running_loop().create_task(_write_answers(writer, answers))
        try:
            session = await self._hello(reader, answers)
            if session is None:
                return
            while not replies.done():
                payload = await asyncio.wait_for(
                    _read_frame(reader, frames.FRAME_MAX), IDLE_TIMEOUT_S
                )
                header, body = frames.split(payload)
                envelope = frames.decode_request(header)
                if isinstance(envelope.request, frames.Hello):  # a renewed session token
                    if not await self._welcome(envelope, answers):
                        return  # refused: nothing after it is served, under any session
                    session = envelope.request.session
                    continue
                await answers.put(asyncio.ensure_future(self._answer(session, envelope, body)))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
            pass  # the client left, or went quiet: its connection ends
        except InvalidRequest as exc:
            logger.info("%s: data-plane connection closed: %s", self.name, exc)
            await _put_final(answers, frames.Answer(-1, frames.failed(exc)))
        finally:
            await _finish(answers, replies)

    async def _hello(
        self, reader: asyncio.StreamReader, answers: asyncio.Queue[asyncio.Future[list[bytes]]]
    ) -> str | None:
        """The session of a connection that said Hello and was welcome; None otherwise."""
        payload = await asyncio.wait_for(
            _read_frame(reader, frames.PRE_AUTH_FRAME_MAX), PRE_AUTH_TIMEOUT_S
        )
        header, _ = frames.split(payload)
        envelope = frames.decode_request(header)
        if not isinstance(envelope.request, frames.Hello):
            raise InvalidRequest("a data-plane connection says Hello before any request")
        if not await self._welcome(envelope, answers):
            return None
        return envelope.request.session

    async def _welcome(
        self, envelope: frames.Envelope, answers: asyncio.Queue[asyncio.Future[list[bytes]]]
    ) -> bool:
        assert isinstance(envelope.request, frames.Hello)
        try:
            result: frames.Result = await self._authenticate(envelope.request.session)
        except BrokerError as exc:
            await _put_final(answers, frames.Answer(envelope.correlation, frames.failed(exc)))
            return False
        await answers.put(_done(frames.frame(frames.Answer(envelope.correlation, result))))
        return True

    async def _answer(
        self, session: str, envelope: frames.Envelope, body: memoryview
    ) -> list[bytes]:
        try:
            result, payload = await self._serve(session, envelope, body)
        except Exception as exc:  # every failure is an answer; the connection goes on
            if not isinstance(exc, BrokerError):
                logger.exception("%s: data-plane request failed", self.name)
            result, payload = frames.failed(exc), None
        return frames.frame(frames.Answer(envelope.correlation, result), payload)


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    """One frame's payload; a length over ``limit`` is refused before it is read."""
    (size,) = frames.LENGTH.unpack(await reader.readexactly(frames.LENGTH.size))
    if size > limit:
        raise InvalidRequest(f"a data-plane frame of {size} bytes is over the {limit}-byte limit")
    return await reader.readexactly(size)


async def _write_answers(
    writer: asyncio.StreamWriter, answers: asyncio.Queue[asyncio.Future[list[bytes]]]
) -> None:
    """Write answers in the order the requests came; a None result ends the connection."""
    while True:
        parts = await (await answers.get())
        if not parts:
            return
        writer.writelines(parts)
        await writer.drain()


def _done(parts: list[bytes]) -> asyncio.Future[list[bytes]]:
    future: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
    future.set_result(parts)
    return future


async def _put_final(
    answers: asyncio.Queue[asyncio.Future[list[bytes]]], answer: frames.Answer
) -> None:
    """A last answer, then the end of the connection."""
    with contextlib.suppress(asyncio.QueueFull):
        answers.put_nowait(_done(frames.frame(answer)))
    with contextlib.suppress(asyncio.QueueFull):
        answers.put_nowait(_done([]))


async def _finish(
    answers: asyncio.Queue[asyncio.Future[list[bytes]]], replies: asyncio.Task[None]
) -> None:
    """Let the written answers go out (briefly), then stop the writer."""
    with contextlib.suppress(asyncio.QueueFull):
        answers.put_nowait(_done([]))
    with contextlib.suppress(Exception, asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(replies), 1.0)
    replies.cancel()
