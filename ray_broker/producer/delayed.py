"""Delayed sends (``send(..., delay_ms=...)`` or ``deliver_at=``): the record goes to the
broker's schedule topic with headers naming where and when it belongs, and the delay scheduler
(``ray_broker/delay_scheduler.py``) moves it there when due — durable, replicated and exactly once
like any transactional write, for consumer groups and share groups alike.

The target partition is chosen now (the key's partition, or the one given, or one at random),
so a delayed record lands where an immediate one with the same key would; records for one
target partition share a schedule partition, so equal due times keep their send order.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray_broker.delay_index import (
    DUE_HEADER,
    PARTITION_HEADER,
    PRIORITY_HEADER,
    TOPIC_HEADER,
    TRACE_HEADER,
)
from ray_broker.errors import InvalidRecord
from ray_broker.producer.partitioner import partition_for_key
from ray_broker.structs import RecordMetadata


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def due_time(delay_ms: object, deliver_at: object, now_ms: int, max_delay_ms: int) -> int:
    """When the record is due (epoch ms).

    Raises:
        InvalidRecord: both or a negative delay, a non-integer, or later than ``max_delay_ms``
            (the broker's ``delay.max.ms``) from now.
    """
    if delay_ms is not None and deliver_at is not None:
        raise InvalidRecord("give delay_ms or deliver_at, not both")
    if delay_ms is not None:
        if not _is_int(delay_ms) or delay_ms < 0:
            raise InvalidRecord(f"delay_ms must be an int >= 0, got {delay_ms!r}")
        due = now_ms + delay_ms
    else:
        if not _is_int(deliver_at) or deliver_at < 0:
            raise InvalidRecord(f"deliver_at must be epoch milliseconds >= 0, got {deliver_at!r}")
        due = int(deliver_at)
    if due - now_ms > max_delay_ms:
        raise InvalidRecord(
            f"a delay of {due - now_ms} ms is longer than the broker's delay.max.ms="
            f"{max_delay_ms} (the schedule topic keeps records only that long)"
        )
    return due


def target_partition(key: bytes | None, partition: int | None, num_partitions: int) -> int:
    if partition is not None:
        return partition
    if key is not None:
        return partition_for_key(key, num_partitions)
    return random.randrange(num_partitions)


@dataclass(frozen=True)
class DelayRoute:
    """Where delayed records for one target partition go (cached per producer)."""

    schedule_partition: int
    headers: tuple[dict[str, Any], ...]  # target topic and partition, as sent


def delay_route(topic: str, partition: int, schedule_partitions: int) -> DelayRoute:
    return DelayRoute(
        zlib.crc32(f"{topic}\x00{partition}".encode()) % schedule_partitions,
        (
            {"key": TOPIC_HEADER, "value": topic.encode()},
            {"key": PARTITION_HEADER, "value": str(partition).encode()},
        ),
    )


def delay_headers(
    route: DelayRoute, due_ms: int, priority: int | None, trace: bool = False
) -> list[dict[str, Any]]:
    """The headers a delayed record carries to the schedule topic (in the producer's
    header-dict form)."""
    extra = [*route.headers, {"key": DUE_HEADER, "value": str(due_ms).encode()}]
    if priority is not None:
        extra.append({"key": PRIORITY_HEADER, "value": str(priority).encode()})
    if trace:
        extra.append({"key": TRACE_HEADER, "value": b"1"})
    return extra


class DelayedFuture:
    """The future of a delayed send: resolves when the schedule topic holds the record. Its
    ``RecordMetadata`` names the target topic and partition, ``offset`` -1 (the record gets
    its offset when it is delivered) and ``timestamp`` = the due time."""

    __slots__ = ("_inner", "_topic", "_partition", "_due")

    def __init__(self, inner: Any, topic: str, partition: int, due_ms: int) -> None:
        self._inner, self._topic, self._partition, self._due = inner, topic, partition, due_ms

    def done(self) -> bool:
        return self._inner.done()

    def result(self, timeout: float | None = None) -> RecordMetadata:
        self._inner.result(timeout)
        return RecordMetadata(self._topic, self._partition, -1, self._due)

    def exception(self, timeout: float | None = None) -> Any:
        return self._inner.exception(timeout)

    def add_done_callback(self, fn: Callable[[DelayedFuture], Any]) -> None:
        self._inner.add_done_callback(lambda _inner: fn(self))
