"""The producer's decisions, as a plain class a test drives with a fake clock: no Ray, no threads.

It owns what records wait in (a topic's open buffer, then one queue per partition), when a
buffer is sealed (full, lingered, flushed), the order batches go out in (sequence order, one
at a time after a failure), how many are in flight per partition, the idempotent sequence
numbers and their rewind after a batch that failed for good, and when an unanswered request has
timed out. The sender thread does the I/O and tells the accumulator what happened.

Not thread-safe: the producer calls every method while holding its lock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ray_broker.actors.partition.producer_state import next_sequence
from ray_broker.errors import BrokerError, BrokerTimeoutError
from ray_broker.producer.batch import PendingRecords, ProducerBatch, RecordFuture
from ray_broker.producer.partitioner import assign_partitions, group_by_partition

# One produce request carries at most this many records.
MAX_REQUEST_RECORDS = 100_000
# A topic's buffer is sealed at the latest when it holds this many records.
MAX_BUFFER_RECORDS = 4 * MAX_REQUEST_RECORDS
# How long a lingered buffer may wait for its topic's requests in flight to be answered (so that,
# under load, records pile into fewer and larger requests — Nagle's idea — while one slow
# partition cannot hold the others' records back for longer than this).
MAX_NAGLE_WAIT_S = 0.02


@dataclass(frozen=True)
class AccumulatorSettings:
    batch_records: int = 16_384
    linger_s: float = 0.005
    max_in_flight: int = 5
    retry_backoff_s: float = 0.1
    delivery_timeout_s: float = 120.0
    request_timeout_s: float = 30.0
    idempotent: bool = True

    @classmethod
    def of(cls, config: Any) -> AccumulatorSettings:
        """From a ``ProducerConfig``."""
        return cls(
            batch_records=config.batch_size,
            linger_s=config.linger_ms / 1000,
            max_in_flight=config.max_in_flight_requests_per_connection,
            retry_backoff_s=config.retry_backoff_ms / 1000,
            delivery_timeout_s=config.delivery_timeout_ms / 1000,
            request_timeout_s=config.request_timeout_ms / 1000,
            idempotent=config.enable_idempotence,
        )


@dataclass
class PartitionQueue:
    """Send state of one partition: batches waiting, in flight, and to be retried in order."""

    ready: deque[ProducerBatch] = field(default_factory=deque)
    retry: list[ProducerBatch] = field(default_factory=list)
    in_flight: list[ProducerBatch] = field(default_factory=list)
    next_sequence: int = 0
    sequence_generation: int = 0
    backoff_until: float = 0.0


class RecordAccumulator:
    """See the module docstring."""

    def __init__(
        self, settings: AccumulatorSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.open: dict[str, PendingRecords] = {}
        # Sealed buffers and send_batch pieces, in the order they were handed in; only the
        # sender moves them into partition queues, so per-partition order is kept.
        self.sealed: deque[PendingRecords | list[ProducerBatch]] = deque()
        self.queues: dict[tuple[str, int], PartitionQueue] = {}
        self.sticky: dict[str, int] = {}
        self.in_flight_by_topic: dict[str, int] = {}
        self.pending_bytes = 0
        self.unfinished = 0  # records buffers and batches not yet completed
        self.flushing = 0
        self.closed = False

    # --- what send() and send_batch() add --------------------------------------------------------

    def append(
        self,
        topic: str,
        num_partitions: int,
        key: bytes | None,
        value: bytes | None,
        size: int,
        timestamp: int,
        headers: list[dict[str, Any]] | None = None,
        partition: int | None = None,
        priority: int | None = None,
        trace: bool = False,
    ) -> tuple[RecordFuture, bool]:
        """Queue one record; returns its future and whether the sender must be woken (a new
        buffer with a linger deadline, or a full one)."""
        records = self.open.get(topic)
        if records is None:
            now = self.clock()
            records = self.open[topic] = PendingRecords(
                topic,
                num_partitions,
                self.buffer_limit(num_partitions),
                now,
                now + self.settings.delivery_timeout_s,
            )
            self.unfinished += 1
        index = len(records.values)
        records.values.append(value)
        records.keys.append(key)
        records.timestamps.append(timestamp)
        if headers is not None or records.headers is not None:
            if records.headers is None:
                records.headers = [None] * index
            records.headers.append(headers)
        if partition is not None or records.partitions is not None:
            if records.partitions is None:
                records.partitions = [None] * index
            records.partitions.append(partition)
        if priority is not None or records.priorities is not None:
            if records.priorities is None:
                records.priorities = [0] * index
            records.priorities.append(priority or 0)
        if trace or records.traced is not None:
            if records.traced is None:
                records.traced = [False] * index
            records.traced.append(bool(trace))
        records.size_bytes += size
        self.pending_bytes += size
        if index + 1 >= records.limit:
            self.seal(topic)
            return RecordFuture(records, index, timestamp), True
        return RecordFuture(records, index, timestamp), index == 0

    def buffer_limit(self, num_partitions: int) -> int:
        """Records a topic's buffer holds before it is sealed: ``batch.size`` per partition (as
        Kafka's batch.size is per partition), so keyed records spread over N partitions still
        make requests of about batch.size records. Capped, so one buffer's split stays short."""
        batch = self.settings.batch_records
        return max(min(batch * num_partitions, MAX_BUFFER_RECORDS), batch)

    def append_table(self, topic: str, pieces: list[tuple[int, pa.Table]]) -> list[ProducerBatch]:
        """Queue a send_batch table already grouped by partition, behind the topic's open
        records (which are sealed first, so the caller's order holds)."""
        self.seal(topic)
        now = self.clock()
        batches = []
        for partition, part in pieces:
            for start in range(0, part.num_rows, MAX_REQUEST_RECORDS):
                batch = ProducerBatch(
                    topic,
                    partition,
                    part.slice(start, MAX_REQUEST_RECORDS),
                    now,
                    now + self.settings.delivery_timeout_s,
                )
                self.pending_bytes += batch.size_bytes
                self.unfinished += 1
                batches.append(batch)
        self.sealed.append(batches)
        return batches

    def next_sticky(self, topic: str, used: bool) -> int:
        """The topic's sticky partition for records without key or partition; after a buffer
        used it, the next one goes elsewhere (KIP-480)."""
        current = self.sticky.get(topic, 0)
        if used:
            self.sticky[topic] = current + 1
        return current

    def seal(self, topic: str) -> None:
        records = self.open.pop(topic, None)
        if records is not None:
            self.sealed.append(records)

    # --- sealing and splitting (the sender) ------------------------------------------------------

    def take_sealed(self, now: float) -> list[PendingRecords | list[ProducerBatch]]:
        """Seal every buffer that is due, and hand over everything sealed, in order."""
        for topic in [t for t, r in self.open.items() if self._due(r, now)]:
            self.seal(topic)
        out = list(self.sealed)
        self.sealed.clear()
        return out

    def _due(self, records: PendingRecords, now: float) -> bool:
        if self.flushing or self.closed or self.settings.linger_s == 0:
            return True  # linger.ms=0 asks for no waiting: under load, batches still merge
        age = now - records.created
        if age < self.settings.linger_s:
            return False
        return not self.in_flight_by_topic.get(records.topic) or age >= (
            self.settings.linger_s + MAX_NAGLE_WAIT_S
        )

    def split(self, records: PendingRecords) -> tuple[list[tuple[int, pa.Table]], Any, Any]:
        """Arrow columns and partitions of a sealed buffer, computed for all rows at once (may
        raise: the caller fails the buffer)."""
        table = records.build_table()
        explicit = None
        if records.partitions is not None:
            explicit = np.array([-1 if p is None else p for p in records.partitions], np.int64)
        keys = table.column("key") if "key" in table.column_names else None
        sticky = self.sticky.get(records.topic, 0)
        parts, used_sticky = assign_partitions(
            table.num_rows, keys, explicit, records.num_partitions, sticky
        )
        if used_sticky:
            self.next_sticky(records.topic, used=True)
        return group_by_partition(table, parts, MAX_REQUEST_RECORDS)

    def place(
        self,
        records: PendingRecords,
        pieces: list[tuple[int, pa.Table]],
        row_piece: Any,
        row_index: Any,
    ) -> None:
        """Queue a split buffer's batches; its futures now point at them."""
        batches = [
            ProducerBatch(records.topic, partition, table, records.created, records.deadline)
            for partition, table in pieces
        ]
        self.pending_bytes += sum(b.size_bytes for b in batches) - records.size_bytes
        self.unfinished += len(batches) - 1
        self.enqueue(batches)
        records.split_into(batches, row_piece, row_index)

    def fail_records(self, records: PendingRecords, error: BrokerError) -> None:
        """A sealed buffer that could not be split fails whole (its records were never sent)."""
        self.pending_bytes -= records.size_bytes
        self.unfinished -= 1
        records.fail(error)

    def enqueue(self, batches: list[ProducerBatch]) -> None:
        """Queue batches behind their partitions' others; one that fits into the partition's
        last waiting batch (never sent yet) rides in its request."""
        for batch in batches:
            queue = self.queue(batch.topic, batch.partition)
            tail = queue.ready[-1] if queue.ready else None
            if (
                tail is not None
                and tail.attempts == 0
                and tail.base_sequence is None
                and tail.record_count + batch.record_count <= self.settings.batch_records
                and tail.table.schema.equals(batch.table.schema)
            ):
                tail.absorb(batch)
                self.unfinished -= 1
            else:
                queue.ready.append(batch)

    def queue(self, topic: str, partition: int) -> PartitionQueue:
        queue = self.queues.get((topic, partition))
        if queue is None:
            queue = self.queues[(topic, partition)] = PartitionQueue()
        return queue

    # --- shipping ---------------------------------------------------------------------------------

    def ready_batches(self, now: float) -> list[ProducerBatch]:
        """Batches to ship now, each partition's in order, within max.in.flight; after a
        failure a partition resends one batch at a time, lowest sequence first."""
        out: list[ProducerBatch] = []
        for queue in self.queues.values():
            if now < queue.backoff_until:
                continue
            if queue.retry:
                if not queue.in_flight:
                    queue.retry.sort(key=lambda b: (b.base_sequence is None, b.base_sequence or 0))
                    out.append(self._start(queue, queue.retry.pop(0)))
                continue
            while queue.ready and len(queue.in_flight) < self.settings.max_in_flight:
                if queue.in_flight and self._can_grow(queue, now):
                    break
                out.append(self._start(queue, queue.ready.popleft()))
        return out

    def _can_grow(self, queue: PartitionQueue, now: float) -> bool:
        """Nagle per partition, bounded: while a request to the partition is unanswered, its one
        waiting batch (which absorbs what arrives meanwhile) waits for the reply — unless it is
        full, or its first record has waited ``MAX_NAGLE_WAIT_S``.

        Every request costs the partition actor ~1 ms of CPU whatever its size, so on a busy
        node requests of one or two records queue for the CPU; merged, they arrive sooner
        (``loadtest/latency.py``: p50 25-40 → 16 ms at 2k msg/s, linger.ms=0; with a 2 ms bound
        instead, 33 ms). The bound keeps a slow reply from holding records back. A batch with
        others queued behind it (it cannot grow any more) goes at once too, up to max.in.flight.
        """
        if len(queue.ready) != 1:
            return False
        waiting = queue.ready[0]
        return (
            waiting.record_count < self.settings.batch_records
            and now - waiting.created < MAX_NAGLE_WAIT_S
        )

    def _start(self, queue: PartitionQueue, batch: ProducerBatch) -> ProducerBatch:
        queue.in_flight.append(batch)
        self.in_flight_by_topic[batch.topic] = self.in_flight_by_topic.get(batch.topic, 0) + 1
        return batch

    def _stop(self, queue: PartitionQueue, batch: ProducerBatch) -> None:
        if batch in queue.in_flight:
            queue.in_flight.remove(batch)
            self.in_flight_by_topic[batch.topic] -= 1

    def sequence(self, batch: ProducerBatch) -> tuple[int, bool]:
        """The batch's base sequence (numbered on first send and again after a rewind), and
        whether an earlier batch of its partition is still unanswered — only then may the
        partition wait for it before appending this one."""
        if not self.settings.idempotent:
            return 0, False
        queue = self.queue(batch.topic, batch.partition)
        if batch.sequence_generation != queue.sequence_generation:
            batch.base_sequence = queue.next_sequence
            batch.sequence_generation = queue.sequence_generation
            queue.next_sequence = next_sequence(queue.next_sequence, batch.record_count)
        # In-flight batches are kept in sending order, which is sequence order.
        predecessors = False
        for other in queue.in_flight:
            if other is batch:
                break
            if other.base_sequence is not None:
                predecessors = True
                break
        assert batch.base_sequence is not None
        return batch.base_sequence, predecessors

    def restart_sequences(self) -> None:
        """A new producer epoch (after a transaction): every partition's sequence starts at 0
        again. Only while nothing is in flight."""
        for queue in self.queues.values():
            queue.next_sequence = 0
            queue.sequence_generation += 1

    def sent(self, batch: ProducerBatch, now: float) -> int:
        """Record an attempt; returns its number (a reply to an older attempt is ignored)."""
        batch.attempts += 1
        batch.sent_at = now
        return batch.attempts

    def timed_out(self, now: float) -> list[ProducerBatch]:
        """In-flight batches without an answer for request.timeout.ms (a hung leader), or past
        delivery.timeout.ms (which bounds the whole send, in flight or not, as in KIP-91)."""
        limit = self.settings.request_timeout_s
        return [
            batch
            for queue in self.queues.values()
            for batch in queue.in_flight
            if batch.attempts and (now - batch.sent_at > limit or now >= batch.deadline)
        ]

    def is_current(self, batch: ProducerBatch, attempt: int | None) -> bool:
        """Whether a reply to ``attempt`` still decides the batch."""
        return not batch.final and (attempt is None or attempt == batch.attempts)

    def failed(self, batch: ProducerBatch, error: BrokerError, now: float) -> BrokerError | None:
        """A failed attempt: None when the batch will be retried (after retry.backoff.ms),
        else the error to complete it with — and then, as nothing of it was written, later
        batches of the partition are renumbered from its sequence."""
        queue = self.queue(batch.topic, batch.partition)
        if error.retriable and now < batch.deadline:
            batch.last_error = error
            self._stop(queue, batch)
            if batch not in queue.retry:
                queue.retry.append(batch)
            queue.backoff_until = now + self.settings.retry_backoff_s
            return None
        if error.retriable:
            timeout = BrokerTimeoutError(
                f"batch for {batch.topic}-{batch.partition} not acknowledged within "
                f"delivery.timeout.ms={self.settings.delivery_timeout_s * 1000:.0f} after "
                f"{batch.attempts} attempt(s); last error: {type(error).__name__}: {error}",
                topic=batch.topic,
                partition=batch.partition,
            )
            timeout.__cause__ = error  # as `raise timeout from error` would chain it
            return timeout
        if batch.base_sequence is not None and (
            batch.sequence_generation == queue.sequence_generation
        ):
            queue.next_sequence = batch.base_sequence
            queue.sequence_generation += 1
        return error

    def finished(self, batch: ProducerBatch) -> bool:
        """Bookkeeping of a batch completed (acknowledged or failed for good); False if its
        outcome was already decided (the caller must then not complete it again)."""
        if batch.final:
            return False
        batch.final = True
        queue = self.queue(batch.topic, batch.partition)
        self._stop(queue, batch)
        if batch in queue.retry:
            queue.retry.remove(batch)
        self.pending_bytes -= batch.size_bytes
        self.unfinished -= 1
        return True

    def next_wakeup(self, now: float) -> float:
        """Seconds until the sender has something to do without being notified."""
        wake = 0.05
        for records in self.open.values():
            due = records.created + self.settings.linger_s
            if now >= due and self.in_flight_by_topic.get(records.topic):
                due += MAX_NAGLE_WAIT_S  # or sooner, when a reply notifies the sender
            wake = min(wake, due - now)
        for queue in self.queues.values():
            if queue.retry or queue.ready:
                wake = min(wake, max(queue.backoff_until - now, 0.001))
        return max(wake, 0.0005)

    @property
    def idle(self) -> bool:
        return not self.unfinished
