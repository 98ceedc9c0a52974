"""Reading a page of records for the API and the message browser: from an offset, from a
time, or from the start, optionally through the broker-side filter, bounded in records and in
time so that a request over an empty or heavily filtered topic answers promptly.
"""

from __future__ import annotations

import time
from typing import Any

from ray_broker.errors import InvalidRequest, UnknownTopicOrPartition
from ray_broker.structs import Record, TopicDescription, TopicPartition

MAX_PAGE_RECORDS = 1_000
BROWSE_DEADLINE_S = 3.0
POLL_TIMEOUT_MS = 300


def browse(
    account: Any,
    topic: str,
    *,
    partition: int | None = None,
    offset: int | None = None,
    timestamp_ms: int | None = None,
    filter_text: str | None = None,
    limit: int = 50,
    described: TopicDescription | None = None,
) -> list[Record]:
    """Up to ``limit`` records of ``topic`` (one partition, or all), in offset order per
    partition, starting at ``offset`` (one partition only) or at the first record at or after
    ``timestamp_ms``, else at the log start. Where each partition starts and ends comes from
    ``described`` (the topic page has it already) or one ``describe_topic``: no call per
    partition before reading.

    Raises:
        InvalidRequest: a limit outside 1..1000, an offset without a partition.
        TopicNotFound, UnknownTopicOrPartition, Unauthorized, InvalidFilter.
    """
    if not 1 <= limit <= MAX_PAGE_RECORDS:
        raise InvalidRequest(f"limit is 1..{MAX_PAGE_RECORDS}, got {limit}", status=422)
    if offset is not None and partition is None:
        raise InvalidRequest("an offset needs a partition", status=422)
    described = described or account.admin().describe_topic(topic)
    if partition is not None and not 0 <= partition < len(described.partitions):
        raise UnknownTopicOrPartition(f"{topic!r} has no partition {partition}")
    chosen = [p for p in described.partitions if partition in (None, p.partition)]
    broker = account.broker
    consumer = broker.consumer(
        enable_auto_commit=False,
        max_poll_records=limit,
        filter=filter_text or None,
        client_id="ray-broker-console",
    )
    try:
        partitions = [TopicPartition(topic, p.partition) for p in chosen]
        consumer.assign(partitions)
        if offset is not None:
            consumer.seek(partitions[0], offset)
        elif timestamp_ms is not None:
            found = consumer.offsets_for_times({tp: timestamp_ms for tp in partitions})
            for tp in partitions:
                if found.get(tp) is None:
                    consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, found[tp].offset)
        else:
            for tp, info in zip(partitions, chosen, strict=True):
                if info.log_start_offset >= 0:
                    consumer.seek(tp, info.log_start_offset)
                else:  # the leader did not describe itself: ask it
                    consumer.seek_to_beginning(tp)
        unknown = [
            tp for tp, info in zip(partitions, chosen, strict=True) if info.high_watermark < 0
        ]
        ends = {TopicPartition(topic, p.partition): p.high_watermark for p in chosen}
        ends.update(consumer.end_offsets(unknown) if unknown else {})
        return _read(consumer, partitions, ends, limit)
    finally:
        broker.release(consumer)


def _read(
    consumer: Any, partitions: list[TopicPartition], ends: dict[TopicPartition, int], limit: int
) -> list[Record]:
    """Poll until ``limit`` records, or every partition is read to its end as of now (no
    waiting for records that are not there), or the deadline."""
    records: list[Record] = []
    deadline = time.monotonic() + BROWSE_DEADLINE_S
    while len(records) < limit and time.monotonic() < deadline:
        if all(consumer.position(tp) >= ends[tp] for tp in partitions):
            break
        batch = consumer.poll(timeout_ms=POLL_TIMEOUT_MS, max_records=limit - len(records))
        records.extend(record for part in batch.values() for record in part)
    records.sort(key=lambda r: (r.partition, r.offset))
    return records[:limit]
