"""Reading and re-driving a dead-letter topic (what ``Admin.list_dead_letters`` and
``Admin.redrive_dead_letters`` do).

Re-driving is exactly once for ``read_committed`` readers: the records go back to their original
topic and partition in a transaction that also commits the re-drive group's position in the
dead-letter topic, so a re-drive interrupted at any point and run again neither skips nor
repeats a record.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pyarrow as pa

from ray_broker.config import DLQ_HEADERS, TopicConfig, dead_letter_topic
from ray_broker.errors import InvalidConfig, TopicExists
from ray_broker.storage.schema import HEADER_TYPE
from ray_broker.structs import DeadLetter, Record, TopicPartition

DLQ_PREFIX = "dlq."
REDRIVE_GROUP_SUFFIX = ".redrive"
POLL_TIMEOUT_MS = 500
IDLE_POLLS_MAX = 4


def dead_letter(record: Record) -> DeadLetter:
    """``record`` of a dead-letter topic with its ``dlq.*`` headers read out."""
    headers = {key: (value or b"").decode(errors="replace") for key, value in record.headers}
    return DeadLetter(
        record.topic,
        record.partition,
        record.offset,
        record.timestamp,
        record.key,
        record.value,
        headers.get("dlq.original.topic", ""),
        int(headers.get("dlq.original.partition", -1) or -1),
        int(headers.get("dlq.original.offset", -1) or -1),
        int(headers.get("dlq.delivery.count", 0) or 0),
        headers.get("dlq.reason", ""),
        headers.get("dlq.error", ""),
        headers.get("dlq.group", ""),
    )


def ensure_dead_letter_topic(broker: Any, topic: str, group: str) -> str | None:
    """The dead-letter topic of ``group`` reading ``topic`` (the topic's ``share.dlq.topic``
    template), created if missing; None if the topic keeps no dead letters."""
    config = broker.admin().describe_topic(topic).config
    template = config.get("share.dlq.topic", TopicConfig().share_dlq_topic)
    if not template:
        return None
    target = dead_letter_topic(template, topic, group)
    with contextlib.suppress(TopicExists):
        broker.admin().create_topic(target, partitions=1)
    return target


def dead_letter_batch(table: pa.Table, group: str, attempts: int, error: str) -> pa.Table:
    """A batch of delivered records (push tables: topic, partition, offset, timestamp, key,
    value, headers) as dead-letter copies with the ``dlq.*`` headers a share group writes."""
    headers = []
    for row in table.select(["topic", "partition", "offset", "headers"]).to_pylist():
        values = (row["topic"], row["partition"], row["offset"], attempts, "failed", error, group)
        pairs = zip(DLQ_HEADERS, values, strict=True)
        extra = [{"key": k, "value": str(v).encode()} for k, v in pairs]
        headers.append((row["headers"] or []) + extra)
    return pa.table(
        {
            "timestamp": table.column("timestamp"),
            "key": table.column("key"),
            "value": table.column("value"),
            "headers": pa.array(headers, HEADER_TYPE),
        }
    )


def _check_limit(max_records: object) -> None:
    if max_records is not None and (
        not isinstance(max_records, int) or isinstance(max_records, bool) or max_records < 1
    ):
        raise InvalidConfig(f"max_records is None or an int >= 1, got {max_records!r}")


def read_all(consumer: Any, ends: dict[TopicPartition, int], max_records: int | None) -> Any:
    """Yield polls of ``consumer`` until it reaches ``ends`` (or ``max_records``)."""
    taken = idle = 0
    while max_records is None or taken < max_records:
        batch = consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
        records = [r for records in batch.values() for r in records]
        if max_records is not None:
            records = records[: max_records - taken]
        taken += len(records)
        if records:
            idle = 0
            yield records
        else:
            idle += 1
        done = all(consumer.position(tp) >= end for tp, end in ends.items())
        if done or idle >= IDLE_POLLS_MAX:
            return


def list_dead_letters(broker: Any, topic: str, max_records: int | None = 100) -> list[DeadLetter]:
    """The records of dead-letter topic ``topic``, oldest first (up to ``max_records``)."""
    _check_limit(max_records)
    consumer = broker.consumer(auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        consumer.subscribe([topic])
        ends = consumer.end_offsets(consumer.assignment())
        out: list[DeadLetter] = []
        for records in read_all(consumer, ends, max_records):
            out.extend(dead_letter(r) for r in records)
        return out
    finally:
        consumer.close()


def redrive(broker: Any, topic: str, max_records: int | None = None) -> int:
    """Send dead letters of ``topic`` back to their original topics and partitions (without
    their ``dlq.*`` headers); returns how many. A second call continues where the last ended.

    Raises:
        TopicNotFound; InvalidConfig for a bad ``max_records``.
    """
    _check_limit(max_records)
    group = topic + REDRIVE_GROUP_SUFFIX
    consumer = broker.consumer(
        topic,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    producer = broker.producer(transactional_id=f"ray-broker-redrive-{topic}")
    moved = 0
    try:
        producer.init_transactions()
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(timeout_ms=100)  # join the group (records are read below)
            for tp in consumer.assignment():
                consumer.seek(tp, consumer.committed(tp) or 0)
        ends = consumer.end_offsets(consumer.assignment())
        for records in read_all(consumer, ends, max_records):
            producer.begin_transaction()
            positions: dict[TopicPartition, int] = {}
            for record in records:
                letter = dead_letter(record)
                headers = [(k, v) for k, v in record.headers if not k.startswith(DLQ_PREFIX)]
                producer.send(
                    letter.original_topic,
                    value=record.value,
                    key=record.key,
                    headers=headers,
                    partition=letter.original_partition if letter.original_partition >= 0 else None,
                )
                positions[TopicPartition(record.topic, record.partition)] = record.offset + 1
            producer.send_offsets_to_transaction(positions, consumer.group_metadata())
            producer.commit_transaction()
            moved += len(records)
            for tp, offset in positions.items():
                consumer.seek(tp, offset)
        return moved
    finally:
        producer.close()
        consumer.close()
