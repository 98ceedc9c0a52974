"""Produce, Fetch, ListOffsets and Metadata: the records' path, translated to the partition
actors' own calls (Arrow tables in, Arrow IPC out)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ray_broker.errors import (
    BrokerError,
    InvalidRecord,
    OutOfOrderSequence,
    RecordTooLarge,
    UnknownTopicOrPartition,
)
from ray_broker.kafka.context import NODE_ID, Connection
from ray_broker.kafka.error_codes import ErrorCode, error_code
from ray_broker.kafka.partition_lane import PartitionLane, Write
from ray_broker.kafka.protocol import Request
from ray_broker.kafka.record_batch import ProducedBatch, decode_produced, encode_fetched
from ray_broker.kafka.txn_epochs import TransactionEpochs
from ray_broker.storage.ipc import from_ipc
from ray_broker.structs import TopicMetadata

# Kafka's timestamps for ListOffsets.
LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3
# Produce v6+ and Fetch v8+ (KIP-219): the client throttles itself by throttle_time_ms; the
# partition already held the answer back, so those versions are told 0 (no double penalty).
PRODUCE_SELF_THROTTLE_VERSION = 6
FETCH_SELF_THROTTLE_VERSION = 8
RETRY_METADATA = {
    ErrorCode.NOT_LEADER_OR_FOLLOWER,
    ErrorCode.LEADER_NOT_AVAILABLE,
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
}


def _leader(meta: TopicMetadata, partition: int) -> Any:
    if not 0 <= partition < meta.num_partitions:
        raise UnknownTopicOrPartition(f"{meta.name} has no partition {partition}")
    return meta.leader(partition)


def _code(conn: Connection, topic: str, exc: BaseException) -> ErrorCode:
    code = error_code(exc)
    if code in RETRY_METADATA:
        conn.listener.link.invalidate(topic)
    return code


# --- Produce ------------------------------------------------------------------------------------


async def produce(conn: Connection, request: Request) -> dict[str, Any] | None:
    body = request.body
    loop = asyncio.get_running_loop()
    work = []
    for topic in body.topic_data:
        for part in topic.partition_data:
            key = (topic.name, part.index)
            # Take this partition's turn now, before any await: arrival order is the order.
            previous = conn.produce_turns.get(key)
            turn = conn.produce_turns[key] = loop.create_future()
            work.append(
                _produce_partition(
                    conn, request, topic.name, part.index, part.records, previous, turn
                )
            )
    answers = await asyncio.gather(*work)
    if body.acks == 0:
        return None  # Kafka sends nothing back to acks=0 producers
    by_topic, throttle = _by_topic(answers, request.version >= PRODUCE_SELF_THROTTLE_VERSION)
    return {
        "responses": [
            {"name": name, "partition_responses": parts} for name, parts in by_topic.items()
        ],
        "throttle_time_ms": throttle,
    }


def _by_topic(
    answers: list[tuple[str, dict[str, Any], int]], client_throttles: bool
) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """Partition answers grouped by topic, and the throttle time to report: the longest the
    partitions held an answer back, or 0 for versions whose clients throttle themselves."""
    by_topic: dict[str, list[dict[str, Any]]] = {}
    throttle = 0
    for topic, answer, throttle_ms in answers:
        by_topic.setdefault(topic, []).append(answer)
        throttle = max(throttle, throttle_ms)
    return by_topic, 0 if client_throttles else throttle


async def _produce_partition(
    conn: Connection,
    request: Request,
    topic: str,
    partition: int,
    records: bytes | None,
    previous: asyncio.Future[None] | None,
    turn: asyncio.Future[None],
) -> tuple[str, dict[str, Any], int]:
    """A connection's writes to one partition enter its lane (``partition_lane.py``) in
    arrival order and are then awaited together: requests pipeline while the partition sees
    them in order — Ray delivers one caller's calls in order, and an idempotent producer's
    sequences make the partition wait for a batch that overtook its predecessor."""
    try:
        if previous is not None:
            await asyncio.shield(previous)
        return await _append(conn, request, topic, partition, records, turn)
    finally:
        if not turn.done():
            turn.set_result(None)
        if conn.produce_turns.get((topic, partition)) is turn:
            del conn.produce_turns[(topic, partition)]


async def _append(
    conn: Connection,
    request: Request,
    topic: str,
    partition: int,
    records: bytes | None,
    submitted: asyncio.Future[None],
) -> tuple[str, dict[str, Any], int]:
    answer: dict[str, Any] = {
        "index": partition,
        "error_code": ErrorCode.NONE,
        "base_offset": -1,
        "log_append_time_ms": -1,
        "log_start_offset": -1,
    }
    acks = request.body.acks
    if acks not in (0, 1, -1):
        answer["error_code"] = ErrorCode.INVALID_REQUIRED_ACKS
        return topic, answer, 0
    try:
        batches = decode_produced(records or b"")
    except InvalidRecord as exc:
        answer["error_code"] = ErrorCode.CORRUPT_MESSAGE
        answer["error_message"] = str(exc)
        return topic, answer, 0
    except RecordTooLarge as exc:
        answer["error_code"] = ErrorCode.MESSAGE_TOO_LARGE
        answer["error_message"] = str(exc)
        return topic, answer, 0
    link = conn.listener.link
    timeout_s = max(request.body.timeout_ms, 1_000) / 1000 + 5
    throttle = 0
    epochs = conn.listener.txn_epochs
    loop = asyncio.get_running_loop()
    try:
        leader = _leader(await link.topic(topic, conn.session), partition)
        writes = [
            Write(
                leader,
                batch.records,
                *_producer_state(epochs, batch, topic, partition),
                batch.transactional,
                acks,
                request.client_id,
                conn.session,
                timeout_s,
                loop.create_future(),
            )
            for batch in batches
        ]
        lane = conn.lanes.setdefault(
            (topic, partition), PartitionLane(conn.listener.link.produce_plane)
        )
        for write in writes:
            lane.write(write)
        submitted.set_result(None)
        try:
            for index, (batch, write) in enumerate(zip(batches, writes, strict=True)):
                base_offset, log_start_offset, throttle_ms = await write.answer
                throttle = max(throttle, throttle_ms)
                if batch.transactional and batch.producer_id is not None:
                    epochs.written(
                        batch.producer_id,
                        batch.producer_epoch,
                        (topic, partition),
                        batch.base_sequence,
                        batch.records.num_rows,
                    )
                if index == 0:
                    answer["base_offset"] = base_offset
                    answer["log_start_offset"] = log_start_offset
        finally:
            if lane.idle and conn.lanes.get((topic, partition)) is lane:
                del conn.lanes[(topic, partition)]
    except BrokerError as exc:
        answer["error_code"] = _code(conn, topic, exc)
        answer["error_message"] = str(exc)[:500]
    return topic, answer, throttle


def _producer_state(
    epochs: TransactionEpochs, batch: ProducedBatch, topic: str, partition: int
) -> tuple[int | None, int, int]:
    """(producer id, epoch, base sequence) as the partition knows them (see txn_epochs.py).

    Raises:
        OutOfOrderSequence: a late write of a transaction that already ended.
    """
    if not batch.transactional or batch.producer_id is None:
        return batch.producer_id, batch.producer_epoch, batch.base_sequence
    producer_id, epoch = epochs.broker_ids(batch.producer_id, batch.producer_epoch)
    sequence = epochs.sequence(
        batch.producer_id, batch.producer_epoch, (topic, partition), batch.base_sequence
    )
    if sequence < 0:
        raise OutOfOrderSequence(f"a write of an ended transaction to {topic}-{partition}")
    return producer_id, epoch, sequence


# The most one Fetch answer carries, whatever it asks: the partition actors' own cap per fetch.
MAX_FETCH_RESPONSE_BYTES = 64 * 1024 * 1024

# --- Fetch --------------------------------------------------------------------------------------


async def fetch(conn: Connection, request: Request) -> dict[str, Any]:
    body = request.body
    budget = _response_budget(body)
    wanted = _wanted_partitions(body, budget)
    read_committed = body.isolation_level == 1
    answers = await asyncio.gather(
        *(_fetch_partition(conn, request, *w, 0, read_committed) for w in wanted)
    )
    size = sum(len(a["records"] or b"") for _, a, _ in answers)
    failed = any(a["error_code"] for _, a, _ in answers)
    if wanted and size < max(body.min_bytes, 1) and body.max_wait_ms > 0 and not failed:
        answers = await _long_poll(conn, request, wanted, read_committed, answers)
    answers = _within_budget(answers, budget)
    by_topic, throttle = _by_topic(answers, request.version >= FETCH_SELF_THROTTLE_VERSION)
    return {
        "throttle_time_ms": throttle,
        "error_code": ErrorCode.NONE,
        "session_id": 0,  # no incremental fetch sessions (KIP-227): clients send full fetches
        "responses": [{"topic": name, "partitions": parts} for name, parts in by_topic.items()],
    }


def _response_budget(body: Any) -> int:
    """The bytes one Fetch answer may carry: the request's ``max_bytes`` (v3+, Kafka's
    ``fetch.max.bytes``), never more than the broker's own cap per fetch."""
    asked = getattr(body, "max_bytes", None)
    if asked is None or asked <= 0:
        return MAX_FETCH_RESPONSE_BYTES
    return min(asked, MAX_FETCH_RESPONSE_BYTES)


def _wanted_partitions(body: Any, budget: int) -> list[tuple[str, int, int, int]]:
    """(topic, partition, offset, byte cap) per partition the request lists, each once (the
    first listing wins, as a repeated partition would answer the same records again), none
    asking for more than the whole answer may carry."""
    wanted: dict[tuple[str, int], tuple[str, int, int, int]] = {}
    for topic in body.topics:
        for part in topic.partitions:
            cap = max(1, min(part.partition_max_bytes, budget))
            wanted.setdefault(
                (topic.topic, part.partition),
                (topic.topic, part.partition, part.fetch_offset, cap),
            )
    return list(wanted.values())


def _within_budget(
    answers: list[tuple[str, dict[str, Any], int]], budget: int
) -> list[tuple[str, dict[str, Any], int]]:
    """Kafka's rule for ``max_bytes``: partitions fill the answer in request order; the first
    with records is answered whole (so a record larger than the budget still moves the
    consumer), and a later one that would overflow answers empty this time (its client asks
    again from the same offset: nothing is skipped)."""
    used = 0
    for _, answer, _ in answers:
        size = len(answer["records"] or b"")
        if size and used and used + size > budget:
            answer["records"] = b""
        else:
            used += size
    return answers


async def _long_poll(
    conn: Connection,
    request: Request,
    wanted: list[tuple[str, int, int, int]],
    read_committed: bool,
    empty: list[tuple[str, dict[str, Any], int]],
) -> list[tuple[str, dict[str, Any], int]]:
    """Park a read in every partition; answer with the first that finds records (the rest
    answer empty this time — a fetch never consumes anything, so nothing is lost)."""
    wait_ms = request.body.max_wait_ms
    tasks = [
        asyncio.ensure_future(_fetch_partition(conn, request, *w, wait_ms, read_committed))
        for w in wanted
    ]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    if pending:
        # Partitions that found records at the same moment are welcome in this answer.
        more, pending = await asyncio.wait(pending, timeout=0.001)
        done |= more
    for task in pending:
        task.cancel()
    answers = []
    for task, previous in zip(tasks, empty, strict=True):
        answers.append(task.result() if task in done else previous)
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    return answers


async def _fetch_partition(
    conn: Connection,
    request: Request,
    topic: str,
    partition: int,
    offset: int,
    max_bytes: int,
    wait_ms: int,
    read_committed: bool,
) -> tuple[str, dict[str, Any], int]:
    answer: dict[str, Any] = {
        "partition_index": partition,
        "error_code": ErrorCode.NONE,
        "high_watermark": -1,
        "last_stable_offset": -1,
        "log_start_offset": -1,
        "aborted_transactions": [],  # the partition hides aborted records from read_committed
        "preferred_read_replica": -1,
        "records": b"",
    }
    link = conn.listener.link
    try:
        leader = _leader(await link.topic(topic, conn.session), partition)
        response = await link.fetch(
            leader,
            offset,
            1_000_000,
            max(max_bytes, 1),
            wait_ms,
            read_committed,
            None,
            "",
            request.client_id,
            session=conn.session,
            timeout_s=wait_ms / 1000 + 30,
        )
    except BrokerError as exc:
        answer["error_code"] = _code(conn, topic, exc)
        return topic, answer, 0
    table = from_ipc(response.records_ipc)
    answer["high_watermark"] = response.high_watermark
    answer["last_stable_offset"] = (
        response.last_stable_offset if response.last_stable_offset >= 0 else response.high_watermark
    )
    answer["log_start_offset"] = response.log_start_offset
    answer["records"] = encode_fetched(table, offset, response.next_offset)
    return topic, answer, response.throttle_time_ms


# --- ListOffsets --------------------------------------------------------------------------------


async def list_offsets(conn: Connection, request: Request) -> dict[str, Any]:
    read_committed = getattr(request.body, "isolation_level", 0) == 1
    topics = []
    for topic in request.body.topics:
        parts = await asyncio.gather(
            *(
                _offset_of(conn, topic.name, p.partition_index, p.timestamp, read_committed)
                for p in topic.partitions
            )
        )
        topics.append({"name": topic.name, "partitions": parts})
    return {"throttle_time_ms": 0, "topics": topics}


async def _offset_of(
    conn: Connection, topic: str, partition: int, timestamp: int, read_committed: bool
) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "partition_index": partition,
        "error_code": ErrorCode.NONE,
        "timestamp": -1,
        "offset": -1,
        "leader_epoch": -1,
    }
    link = conn.listener.link
    try:
        leader = _leader(await link.topic(topic, conn.session), partition)
        if timestamp in (LATEST, EARLIEST, MAX_TIMESTAMP):
            offsets = await link.call(leader.offsets, session=conn.session, timeout_s=30)
            if timestamp == EARLIEST:
                answer["offset"] = offsets.log_start_offset
            elif read_committed and offsets.last_stable_offset >= 0:
                answer["offset"] = offsets.last_stable_offset
            else:
                answer["offset"] = offsets.high_watermark
        else:
            found = await link.call(
                leader.offset_for_time, timestamp, session=conn.session, timeout_s=30
            )
            if found is not None:
                answer["offset"], answer["timestamp"] = found
    except BrokerError as exc:
        answer["error_code"] = _code(conn, topic, exc)
    return answer


# --- Metadata -----------------------------------------------------------------------------------


async def metadata(conn: Connection, request: Request) -> dict[str, Any]:
    body = request.body
    link = conn.listener.link
    auto_create = bool(getattr(body, "allow_auto_topic_creation", True))
    if body.topics is None:
        names = await link.call(link.controller.list_topics, session=conn.session)
        auto_create = False
    else:
        names = [t.name for t in body.topics if t.name]
    found = await asyncio.gather(
        *(link.topic(name, conn.session, auto_create) for name in names), return_exceptions=True
    )
    topics = []
    for name, meta in zip(names, found, strict=True):
        if isinstance(meta, BaseException):
            code = (
                error_code(meta)
                if isinstance(meta, BrokerError)
                else ErrorCode.UNKNOWN_SERVER_ERROR
            )
            topics.append(
                {"error_code": code, "name": name, "is_internal": False, "partitions": []}
            )
            continue
        partitions = []
        for index, leader in enumerate(meta.leaders):
            partitions.append(
                {
                    "error_code": ErrorCode.NONE
                    if leader is not None
                    else ErrorCode.LEADER_NOT_AVAILABLE,
                    "partition_index": index,
                    "leader_id": NODE_ID if leader is not None else -1,
                    "leader_epoch": -1,
                    "replica_nodes": [NODE_ID],
                    "isr_nodes": [NODE_ID],
                    "offline_replicas": [],
                }
            )
        topics.append(
            {
                "error_code": ErrorCode.NONE,
                "name": name,
                "is_internal": name.startswith("__"),
                "partitions": partitions,
            }
        )
    listener = conn.listener
    return {
        "throttle_time_ms": 0,
        "brokers": [
            {"node_id": NODE_ID, "host": listener.host, "port": listener.port, "rack": None}
        ],
        "cluster_id": listener.cluster_id,
        "controller_id": NODE_ID,
        "topics": topics,
    }
