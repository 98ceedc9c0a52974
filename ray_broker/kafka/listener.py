"""The Kafka protocol listener: an asyncio TCP server inside a Ray actor.

**Proxy mode.** A listener answers Metadata as the one broker (node 0) that leads every
partition and coordinates every group; it forwards each request to the partition leader's
actor wherever that runs in the Ray cluster. Clients therefore need to reach only the
listener's address, which is what ``--kafka-listener HOST:PORT`` binds — nothing else of the
Ray cluster is exposed. The price is one extra hop inside the cluster; the records cross it as
Arrow.

**One connection.** Frames are read as they come; up to ``MAX_IN_FLIGHT`` requests of a
connection run at once (clients pipeline: librdkafka keeps several produce requests in
flight) and their answers are written in request order, as Kafka's protocol requires. Writes
to one partition keep their arrival order (``data_handlers.produce``).

**Hostile input closes only its connection:** a frame longer than ``MAX_REQUEST_BYTES`` (Kafka's
``socket.request.max.bytes``), bytes that are not a request, an unknown API or version (answered
for ApiVersions, as Kafka does), a client that stops mid-frame for ``FRAME_TIMEOUT_S``, any
unexpected failure while answering. Record batches are checked (length, magic, CRC-32C)
before anything is written (``record_batch.py``).

**Strangers cost little.** A connection is *pending* until it has logged in (security on) or
sent its first request (security off). Pending connections may send frames of at most
``MAX_FRAME_BEFORE_LOGIN_BYTES`` (Kafka's ``sasl.server.max.receive.size``), must leave that
state within ``LOGIN_TIMEOUT_S``, and at most ``MAX_PENDING_CONNECTIONS`` exist: a new one
closes the oldest pending one, so a flood of idle sockets cannot lock a real client out. One
client address holds at most ``MAX_CONNECTIONS_PER_ADDRESS`` connections (Kafka's
``max.connections.per.ip``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ray_broker.actors.priority import serve_at_normal_priority
from ray_broker.config import BrokerConfig, parse_config
from ray_broker.gc_pause import freeze_loaded_heap
from ray_broker.kafka import admin_handlers, data_handlers, group_handlers, sasl
from ray_broker.kafka.classic_groups import ClassicGroups
from ray_broker.kafka.context import Connection, ListenerState
from ray_broker.kafka.error_codes import ErrorCode, watching_session_refusals
from ray_broker.kafka.link import BrokerLink
from ray_broker.kafka.protocol import (
    APIS,
    MAX_REQUEST_BYTES,
    Request,
    UnsupportedRequest,
    api_versions_list,
    decode_request,
    encode_response,
    peek,
)

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT = 16
FRAME_TIMEOUT_S = 30.0
IDLE_TIMEOUT_S = 600.0  # Kafka's connections.max.idle.ms
MAX_CONNECTIONS = 2_000
MAX_CONNECTIONS_PER_ADDRESS = 1_000
MAX_PENDING_CONNECTIONS = 256
MAX_FRAME_BEFORE_LOGIN_BYTES = 512 * 1024
LOGIN_TIMEOUT_S = 10.0
GROUP_TICK_S = 0.05

API_VERSIONS = 18
SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
BEFORE_LOGIN = {API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE}

Handler = Callable[[Connection, Request], Awaitable[dict[str, Any] | None]]


async def api_versions(conn: Connection, request: Request) -> dict[str, Any]:
    return {"error_code": ErrorCode.NONE, "api_keys": api_versions_list(), "throttle_time_ms": 0}


HANDLERS: dict[str, Handler] = {
    "Produce": data_handlers.produce,
    "Fetch": data_handlers.fetch,
    "ListOffsets": data_handlers.list_offsets,
    "Metadata": data_handlers.metadata,
    "OffsetCommit": group_handlers.offset_commit,
    "OffsetFetch": group_handlers.offset_fetch,
    "FindCoordinator": group_handlers.find_coordinator,
    "JoinGroup": group_handlers.join_group,
    "Heartbeat": group_handlers.heartbeat,
    "LeaveGroup": group_handlers.leave_group,
    "SyncGroup": group_handlers.sync_group,
    "DescribeGroups": group_handlers.describe_groups,
    "ListGroups": group_handlers.list_groups,
    "SaslHandshake": sasl.sasl_handshake,
    "ApiVersions": api_versions,
    "CreateTopics": admin_handlers.create_topics,
    "DeleteTopics": admin_handlers.delete_topics,
    "InitProducerId": admin_handlers.init_producer_id,
    "AddPartitionsToTxn": admin_handlers.add_partitions_to_txn,
    "AddOffsetsToTxn": admin_handlers.add_offsets_to_txn,
    "EndTxn": admin_handlers.end_txn,
    "TxnOffsetCommit": admin_handlers.txn_offset_commit,
    "DescribeConfigs": admin_handlers.describe_configs,
    "SaslAuthenticate": sasl.sasl_authenticate,
}
assert set(HANDLERS) == {api.name for api in APIS.values()}


class _Close(Exception):
    """End this connection (after writing ``answer``, if any)."""

    def __init__(self, reason: str, answer: bytes | None = None) -> None:
        super().__init__(reason)
        self.answer = answer


class KafkaListener:
    """Ray actor: one Kafka listener (``start_listener`` creates it)."""

    def __init__(
        self,
        namespace: str,
        settings: dict[str, Any],
        host: str,
        port: int,
        security_enabled: bool,
        cluster_id: str,
    ) -> None:
        logging.basicConfig(level=logging.INFO)
        serve_at_normal_priority()  # a server: not behind the clients it serves (priority.py)
        freeze_loaded_heap()  # see ray_broker/gc_pause.py
        self._host = host
        self._port = port
        delay = parse_config(BrokerConfig, settings).group_initial_rebalance_delay_ms
        self._state = ListenerState(
            BrokerLink(namespace, settings),
            ClassicGroups(time.monotonic, delay),
            host,
            port,
            cluster_id,
            security_enabled,
        )
        self._server: asyncio.base_events.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()
        # Pending connections, oldest first (see the module docstring).
        self._pending: collections.OrderedDict[asyncio.Task[None], None] = collections.OrderedDict()
        self._per_address: collections.Counter[str] = collections.Counter()
        self.counters = {
            "connections": 0,
            "requests": 0,
            "closed_for_errors": 0,
            "refused": 0,
            "evicted_before_login": 0,
        }
        # An async actor's __init__ runs on its event loop: bind now, so a listener Ray
        # restarts after a crash serves again without anyone calling start().
        self._binding = asyncio.get_event_loop().create_task(self._bind())

    async def _bind(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self._host, self._port, reuse_address=True, limit=2**20
        )
        self._port = self._server.sockets[0].getsockname()[1]  # port 0: the one chosen
        self._state.port = self._port
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        logger.info("Kafka listener serving on %s:%d", self._host, self._port)

    async def start(self) -> dict[str, Any]:
        """Wait until bound. Raises OSError when the address is taken."""
        await asyncio.shield(self._binding)
        return await self.describe()

    async def describe(self) -> dict[str, Any]:
        # No stop method: a listener stops with its broker (``Broker.shutdown`` kills the
        # actor), never by a call any Ray driver could make without the broker's session.
        return {
            "host": self._host,
            "port": self._port,
            "serving": self._server is not None and self._server.is_serving(),
            "open_connections": len(self._connections),
            "groups": len(self._state.groups.groups),
            **self.counters,
        }

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(GROUP_TICK_S)
            try:
                self._state.groups.tick()
            except Exception:  # the ticker must outlive any one group's failure
                logger.exception("classic group housekeeping failed")

    # --- connections --------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peername = writer.get_extra_info("peername")
        address = str(peername[0]) if isinstance(peername, tuple) else str(peername)
        if (
            len(self._connections) >= MAX_CONNECTIONS
            or self._per_address[address] >= MAX_CONNECTIONS_PER_ADDRESS
        ):
            self.counters["refused"] += 1
            writer.close()
            return
        self._make_room_for_a_pending_connection()
        self._connections.add(task)
        self._pending[task] = None
        self._per_address[address] += 1
        self.counters["connections"] += 1
        peer = str(peername)
        conn = Connection(self._state, peer)
        try:
            await self._serve(conn, reader, writer)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except _Close as close:
            self.counters["closed_for_errors"] += 1
            logger.info("closing Kafka connection %s: %s", peer, close)
        except Exception:
            self.counters["closed_for_errors"] += 1
            logger.exception("Kafka connection %s failed", peer)
        finally:
            self._connections.discard(task)
            self._pending.pop(task, None)
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]
            with contextlib.suppress(Exception):
                writer.close()

    def _make_room_for_a_pending_connection(self) -> None:
        while len(self._pending) >= MAX_PENDING_CONNECTIONS:
            oldest, _ = self._pending.popitem(last=False)
            self.counters["evicted_before_login"] += 1
            oldest.cancel()

    def _admitted(self, conn: Connection) -> None:
        """The connection logged in (or, without security, spoke): no longer pending."""
        task = asyncio.current_task()
        if task is not None:
            self._pending.pop(task, None)

    async def _serve(
        self, conn: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        answers: asyncio.Queue[asyncio.Task[bytes | None] | None] = asyncio.Queue()
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        sender = asyncio.create_task(self._send_answers(answers, slots, writer))
        login_deadline = time.monotonic() + LOGIN_TIMEOUT_S
        logging_in = True  # pending: not logged in (or, without security, silent) yet
        try:
            while True:
                if logging_in:
                    # Without security anyone may produce anyway: only the deadline applies.
                    limit = (
                        MAX_FRAME_BEFORE_LOGIN_BYTES
                        if conn.listener.security_enabled
                        else MAX_REQUEST_BYTES
                    )
                    wait_s = login_deadline - time.monotonic()
                    if wait_s <= 0:
                        raise _Close(f"no login within {LOGIN_TIMEOUT_S:.0f} s")
                else:
                    limit, wait_s = MAX_REQUEST_BYTES, IDLE_TIMEOUT_S
                # A refused request ends the connection at once, not at the client's next frame.
                reading = asyncio.ensure_future(self._read_frame(reader, limit, wait_s))
                await asyncio.wait({reading, sender}, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    reading.cancel()
                    break
                frame = reading.result()
                if frame is None:
                    break
                self.counters["requests"] += 1
                await slots.acquire()
                task = asyncio.create_task(self._answer(conn, frame))
                answers.put_nowait(task)
                if not conn.authenticated:
                    # Logging in is a conversation: the next request may depend on this one.
                    await asyncio.wait([task])
                if logging_in and conn.authenticated:
                    logging_in = False
                    self._admitted(conn)
            answers.put_nowait(None)
            await sender
        finally:
            if not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
            while not answers.empty():
                pending = answers.get_nowait()
                if pending is not None:
                    pending.cancel()

    async def _read_frame(
        self, reader: asyncio.StreamReader, limit: int, wait_s: float
    ) -> bytes | None:
        """The next frame, refused by its length prefix before any of it is read when it is
        longer than ``limit``; None when the client closed or said nothing for ``wait_s``."""
        try:
            prefix = await asyncio.wait_for(reader.readexactly(4), wait_s)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError):
            return None
        size = int.from_bytes(prefix, "big", signed=True)
        if not 8 <= size <= limit:
            raise _Close(f"a frame of {size} bytes (at most {limit} here)")
        try:
            return await asyncio.wait_for(reader.readexactly(size), FRAME_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise _Close(f"the client stalled mid-frame for {FRAME_TIMEOUT_S:.0f} s") from None

    async def _send_answers(
        self,
        answers: asyncio.Queue[asyncio.Task[bytes | None] | None],
        slots: asyncio.Semaphore,
        writer: asyncio.StreamWriter,
    ) -> None:
        while True:
            task = await answers.get()
            if task is None:
                return
            try:
                answer = await task
            except _Close as close:
                if close.answer:
                    writer.write(close.answer)
                    await writer.drain()
                raise
            finally:
                slots.release()
            if answer:
                writer.write(answer)
                await writer.drain()

    async def _answer(self, conn: Connection, frame: bytes) -> bytes | None:
        api_key, version, correlation_id = peek(frame)
        try:
            request = decode_request(frame)
        except UnsupportedRequest as exc:
            if api_key == API_VERSIONS:  # answered in v0, as Kafka does, so clients can retry
                return encode_response(
                    APIS[API_VERSIONS],
                    0,
                    correlation_id,
                    {"error_code": ErrorCode.UNSUPPORTED_VERSION, "api_keys": api_versions_list()},
                )
            raise _Close(str(exc)) from None
        if conn.listener.security_enabled:
            if not conn.authenticated and api_key not in BEFORE_LOGIN:
                raise _Close(f"{request.api.name} before SASL authentication")
            if conn.session and time.monotonic() >= conn.session_ends:
                raise _Close("the SASL session expired (authenticate again)")
        try:
            with watching_session_refusals() as session_refused:
                fields = await HANDLERS[request.api.name](conn, request)
        except sasl.SaslFailed as failed:
            answer = encode_response(request.api, version, correlation_id, failed.answer)
            raise _Close(str(failed), answer) from None
        if fields is None:
            return None
        answer = encode_response(request.api, version, correlation_id, fields)
        if conn.authenticated and conn.session and session_refused[0]:
            # The user was deleted or the session revoked: answer, then close, so the client
            # logs in again (and fails) instead of being refused request by request.
            raise _Close("the session is no longer valid", answer)
        return answer
