"""Message tracing: the trail of a traced record, written to the internal topic ``__message_trace``.

A record is traced when its topic says ``message.trace=true`` or its producer sent it with
``send(..., trace=True)``; the partition marks it with ``ATTR_TRACED`` in its attributes, so the
mark is in the log, replicated, and known to any later leader. Each step of its life becomes one
trace event — a small JSON record keyed ``"<topic>/<partition>/<offset>"`` (with the record's
``trace.id`` header, if it has one, as a header) in ``__message_trace``:

``produced`` (the record's own timestamp, producer id) → ``appended`` (leader node, epoch) →
``committed`` (the in-sync replicas that hold it, the high watermark) → ``delivered`` (to which
consumer or share member, delivery count) → ``accepted`` / ``released`` / ``rejected`` →
``dead_lettered`` (the dead-letter topic).

Why an internal topic: the trail is retained, replicated and readable like any record
(``ray-broker trace`` reads it with a server-side filter), and writing it costs the traced
partition one batched produce per ``TRACE_FLUSH_MS``, not one call per event. Tracing off costs
a column-name check per produced batch and a null count per fetched one.

``TraceRecorder`` (plain, here) collects events in a bounded buffer; ``TraceShipper``
(``trace_shipper.py``, asyncio in the partition actor) ships them. Events beyond the
bound are counted and logged as dropped, never silently lost; the record itself is never
delayed by its trace.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_broker.config import TRACE_ID_HEADER
from ray_broker.storage.log import wall_clock_ms
from ray_broker.storage.record_filter import header_column
from ray_broker.storage.schema import ATTR_TRACED, HEADER_TYPE

logger = logging.getLogger(__name__)

# Events waiting to be shipped per partition; past it new events are dropped and counted.
TRACE_BUFFER_EVENTS = 100_000
# The most events a partition ships to the trace topic in one produce.
TRACE_SHIP_EVENTS = 10_000

# The trace topic's values: one JSON object per event.
EVENTS = (
    "produced",
    "appended",
    "committed",
    "delivered",
    "accepted",
    "released",
    "rejected",
    "dead_lettered",
)


def trace_key(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset}"


def traced_rows(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """Row positions of ``table`` (log records) marked ``ATTR_TRACED``; cheap when none is:
    records without attributes (most) are skipped by a null count."""
    attributes = table.column("attributes")
    if table.num_rows == 0 or attributes.null_count == table.num_rows:
        return np.empty(0, dtype=np.int64)
    flags = pc.fill_null(attributes, 0).to_numpy(zero_copy_only=False)
    return np.flatnonzero(flags & ATTR_TRACED)


class TraceRecorder:
    """Trace events of one partition waiting to be shipped, and traced offsets waiting to be
    committed (their ``committed`` event is written when the high watermark passes them)."""

    def __init__(self, topic: str, partition: int, limit: int = TRACE_BUFFER_EVENTS) -> None:
        self.topic = topic
        self.partition = partition
        self.limit = limit
        self.events: deque[tuple[str, str, str | None, int]] = deque()  # key, json, id, time
        self.dropped = 0
        self._uncommitted: deque[tuple[int, str | None]] = deque()
        # Share-group deliveries of traced records not finished yet: (group, offset) -> trace id.
        self._awaiting_answer: dict[tuple[str, int], str | None] = {}

    def __len__(self) -> int:
        return len(self.events)

    def record(
        self,
        event: str,
        offsets: Iterable[int],
        trace_ids: Sequence[str | None] | None = None,
        at_ms: int | Sequence[int] | None = None,
        **details: Any,
    ) -> None:
        """One ``event`` per offset (``at_ms`` one time or one per offset; now by default)."""
        assert event in EVENTS, event
        now = wall_clock_ms() if at_ms is None else at_ms
        for index, offset in enumerate(offsets):
            if len(self.events) >= self.limit:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 10_000 == 0:
                    logger.warning(
                        "%s-%d: trace buffer full, %d trace events dropped so far",
                        self.topic,
                        self.partition,
                        self.dropped,
                    )
                continue
            when = now if isinstance(now, int) else int(now[index])
            trace_id = trace_ids[index] if trace_ids is not None else None
            value = {
                "event": event,
                "time_ms": when,
                "topic": self.topic,
                "partition": self.partition,
                "offset": int(offset),
                **details,
            }
            if trace_id is not None:
                value["trace_id"] = trace_id
            key = trace_key(self.topic, self.partition, int(offset))
            self.events.append((key, json.dumps(value), trace_id, when))

    def appended(self, batch: pa.RecordBatch | pa.Table, rows: np.ndarray, **details: Any) -> None:
        """``produced`` and ``appended`` for the traced ``rows`` of a batch just written."""
        offsets = pc.take(batch.column("offset"), pa.array(rows)).to_pylist()
        stamps = pc.take(batch.column("timestamp"), pa.array(rows)).to_pylist()
        ids = trace_ids_of(batch, rows)
        producer = batch.column("producer_id")[int(rows[0])].as_py()
        self.record("produced", offsets, ids, stamps, producer_id=producer)
        self.record("appended", offsets, ids, **details)
        self._uncommitted.extend(zip(offsets, ids, strict=True))
        while len(self._uncommitted) > self.limit:  # replication stalled: bounded all the same
            self._uncommitted.popleft()
            self.dropped += 1

    def committed(self, high_watermark: int, **details: Any) -> None:
        """``committed`` for traced offsets the high watermark has passed."""
        done: list[tuple[int, str | None]] = []
        while self._uncommitted and self._uncommitted[0][0] < high_watermark:
            done.append(self._uncommitted.popleft())
        if done:
            self.record(
                "committed",
                [o for o, _ in done],
                [i for _, i in done],
                high_watermark=high_watermark,
                **details,
            )

    @property
    def awaiting_answer(self) -> bool:
        return bool(self._awaiting_answer)

    @property
    def uncommitted(self) -> bool:
        return bool(self._uncommitted)

    def forget_uncommitted(self) -> None:
        """This replica stopped leading: the new leader's high watermark decides."""
        self._uncommitted.clear()

    def delivered(
        self, table: pa.Table, rows: np.ndarray, group: str | None = None, **details: Any
    ) -> None:
        """``delivered`` for the traced ``rows`` of a fetched table. A share group's table has
        a ``delivery_count`` column; its traced offsets are remembered until answered."""
        offsets = pc.take(table.column("offset"), pa.array(rows)).to_pylist()
        ids = trace_ids_of(table, rows)
        if group is None:
            self.record("delivered", offsets, ids, **details)
            return
        counts = pc.take(table.column("delivery_count"), pa.array(rows)).to_pylist()
        for offset, trace_id, count in zip(offsets, ids, counts, strict=True):
            self.record(
                "delivered", [offset], [trace_id], group=group, delivery_count=count, **details
            )
            self._awaiting_answer[(group, offset)] = trace_id
            if len(self._awaiting_answer) > self.limit:  # never answered (group deleted)
                self._awaiting_answer.pop(next(iter(self._awaiting_answer)))

    def answered(self, event: str, group: str, offsets: Iterable[int], **details: Any) -> None:
        """A share group's answer (or dead-letter copy) for offsets delivered traced."""
        traced = [o for o in offsets if (group, o) in self._awaiting_answer]
        if not traced:
            return
        ids = [self._awaiting_answer[(group, o)] for o in traced]
        self.record(event, traced, ids, group=group, **details)
        if event in ("accepted", "dead_lettered"):  # the end of the trail
            for offset in traced:
                self._awaiting_answer.pop((group, offset), None)

    def take(self, limit: int = TRACE_SHIP_EVENTS) -> pa.Table | None:
        """Up to ``limit`` events as a producer batch for the trace topic (still buffered:
        ``shipped`` removes them once the trace topic acknowledged them)."""
        if not self.events:
            return None
        batch = [self.events[i] for i in range(min(limit, len(self.events)))]
        headers = [
            [{"key": TRACE_ID_HEADER, "value": trace_id.encode()}] if trace_id else []
            for _, _, trace_id, _ in batch
        ]
        return pa.table(
            {
                "key": pa.array([k.encode() for k, _, _, _ in batch], pa.binary()),
                "value": pa.array([v.encode() for _, v, _, _ in batch], pa.binary()),
                "headers": pa.array(headers, HEADER_TYPE),
                "timestamp": pa.array([t for _, _, _, t in batch], pa.int64()),
            }
        )

    def shipped(self, count: int) -> None:
        for _ in range(min(count, len(self.events))):
            self.events.popleft()


def trace_ids_of(table: pa.Table | pa.RecordBatch, rows: np.ndarray) -> list[str | None]:
    if table.column("headers").null_count == table.num_rows:
        return [None] * len(rows)
    headers = table.column("headers")
    if isinstance(headers, pa.ChunkedArray):
        headers = headers.combine_chunks()
    values = header_column(pc.take(headers, pa.array(rows)), TRACE_ID_HEADER).to_pylist()
    return [v.decode(errors="replace") if v is not None else None for v in values]
