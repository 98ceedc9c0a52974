"""The producer: per-record ``send()`` into per-partition column buffers, shipped as Arrow batches.

``send()`` costs a few microseconds: it picks a partition, appends key/value to the partition's
open batch (plain Python lists) and returns a light future. A sender thread turns each batch into
one Arrow table and one actor call when it is full (``batch.size`` records) or has waited
``linger.ms``; up to ``max.in.flight.requests.per.connection`` calls per partition are in flight.

Delivery is at-least-once with retries inside ``delivery.timeout.ms`` and, with
``enable.idempotence`` (the default, as in Kafka 3), exactly-once per partition: every batch
carries (producer id, epoch, base sequence), so a batch retried after its partition actor died
is recognised if it had been written, and batches are written in order.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_broker._ray import classify, submit
from ray_broker.actors.producer_state import next_sequence
from ray_broker.config import ProducerConfig, client_config
from ray_broker.errors import (
    BrokerError,
    BrokerTimeoutError,
    InvalidPartitions,
    InvalidRecord,
    ProducerClosed,
    RecordTooLarge,
    SerializationError,
)
from ray_broker.metadata import MetadataCache
from ray_broker.partitioner import partition_for_key, partitions_for_keys
from ray_broker.storage.schema import BROKER_COLUMNS, HEADER_TYPE
from ray_broker.structs import BatchMetadata, ProduceResult, RecordMetadata, TopicMetadata

logger = logging.getLogger(__name__)

# The largest record timestamp accepted (int64 milliseconds).
MAX_TIMESTAMP_MS = 2**63 - 1
# One produce request carries at most this many records of a send_batch() table.
MAX_REQUEST_RECORDS = 100_000


class ProducerBatch:
    """Records bound for one partition, shipped (and retried) as one unit."""

    __slots__ = (
        "topic",
        "partition",
        "keys",
        "values",
        "headers",
        "timestamps",
        "table",
        "size_bytes",
        "created",
        "deadline",
        "base_sequence",
        "sequence_generation",
        "attempts",
        "result",
        "error",
        "done",
        "callbacks",
        "last_error",
        "lock",
        "sent_at",
    )

    def __init__(self, topic: str, partition: int, deadline: float) -> None:
        self.topic = topic
        self.partition = partition
        self.keys: list[bytes | None] = []
        self.values: list[bytes | None] = []
        self.headers: list[Any] | None = None
        self.timestamps: list[int] = []
        self.table: pa.Table | None = None
        self.size_bytes = 0
        self.created = time.monotonic()
        self.deadline = deadline
        self.base_sequence: int | None = None
        self.sequence_generation = -1
        self.attempts = 0
        self.result: ProduceResult | None = None
        self.error: BrokerError | None = None
        self.done = threading.Event()
        self.callbacks: list[Callable[[], None]] = []
        self.last_error: BrokerError | None = None
        self.lock = threading.Lock()
        self.sent_at = 0.0

    @property
    def record_count(self) -> int:
        return self.table.num_rows if self.table is not None else len(self.values)

    def build_table(self) -> pa.Table:
        if self.table is None:
            columns: dict[str, pa.Array] = {"value": pa.array(self.values, pa.binary())}
            if any(k is not None for k in self.keys):
                columns["key"] = pa.array(self.keys, pa.binary())
            if self.headers is not None:
                columns["headers"] = pa.array(self.headers, HEADER_TYPE)
            columns["timestamp"] = pa.array(self.timestamps, pa.int64())
            self.table = pa.table(columns)
            self.keys, self.values, self.headers, self.timestamps = [], [], None, []
        return self.table

    def complete(self, result: ProduceResult | None, error: BrokerError | None) -> None:
        with self.lock:
            self.result, self.error = result, error
            self.done.set()
            callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # the application's callback; the other callbacks still run
                logger.exception("a send() callback raised")

    def on_done(self, callback: Callable[[], None]) -> None:
        with self.lock:
            if not self.done.is_set():
                self.callbacks.append(callback)
                return
        callback()


class RecordFuture:
    """The eventual ``RecordMetadata`` of one ``send()``; resolves when its batch is acked."""

    __slots__ = ("_batch", "_index", "_timestamp")

    def __init__(self, batch: ProducerBatch, index: int, timestamp: int) -> None:
        self._batch = batch
        self._index = index
        self._timestamp = timestamp

    def done(self) -> bool:
        return self._batch.done.is_set()

    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Wait for the acknowledgement.

        Raises:
            BrokerTimeoutError: not acknowledged within ``timeout`` seconds (the send goes on).
            BrokerError: the delivery failed (the typed reason, e.g. RecordTooLarge).
        """
        if not self._batch.done.wait(timeout):
            raise BrokerTimeoutError(f"record not acknowledged within {timeout} s (still pending)")
        batch = self._batch
        if batch.error is not None:
            raise batch.error
        assert batch.result is not None
        offset = -1 if batch.result.base_offset < 0 else batch.result.base_offset + self._index
        timestamp = batch.result.log_append_time
        if timestamp < 0:
            timestamp = self._timestamp
        return RecordMetadata(batch.topic, batch.partition, offset, timestamp)

    def exception(self, timeout: float | None = None) -> BrokerError | None:
        try:
            self.result(timeout)
        except BrokerTimeoutError:
            raise
        except BrokerError as exc:
            return exc
        return None

    def add_done_callback(self, fn: Callable[[RecordFuture], Any]) -> None:
        """Call ``fn(self)`` once acknowledged or failed (on the producer's I/O thread)."""
        self._batch.on_done(lambda: fn(self))


class BatchFuture:
    """The eventual placement of a ``send_batch()`` table: one entry per request it became."""

    def __init__(self, batches: list[ProducerBatch]) -> None:
        self._batches = batches

    def done(self) -> bool:
        return all(b.done.is_set() for b in self._batches)

    def result(self, timeout: float | None = None) -> list[BatchMetadata]:
        """Raises BrokerTimeoutError after ``timeout`` seconds, or the batch's typed error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        for batch in self._batches:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
            if not batch.done.wait(remaining):
                raise BrokerTimeoutError(f"batch not acknowledged within {timeout} s")
            if batch.error is not None:
                raise batch.error
            assert batch.result is not None
            out.append(
                BatchMetadata(
                    batch.topic, batch.partition, batch.result.base_offset, batch.result.last_offset
                )
            )
        return out


@dataclass
class _PartitionQueue:
    """Send state of one partition: batches waiting, in flight, and to be retried in order."""

    open: ProducerBatch | None = None
    ready: deque[ProducerBatch] = field(default_factory=deque)
    retry: list[ProducerBatch] = field(default_factory=list)
    in_flight: list[ProducerBatch] = field(default_factory=list)
    next_sequence: int = 0
    sequence_generation: int = 0
    backoff_until: float = 0.0


class Producer:
    """Sends records to topics; thread-safe; use as a context manager or call ``close()``."""

    def __init__(self, metadata: MetadataCache, **options: Any) -> None:
        self.config: ProducerConfig = client_config(ProducerConfig, options)
        self._metadata = metadata
        self._producer_id = secrets.randbits(62) if self.config.enable_idempotence else None
        self._epoch = 0
        self._queues: dict[tuple[str, int], _PartitionQueue] = {}
        self._sticky: dict[str, int] = {}
        self._cond = threading.Condition()
        self._pending_bytes = 0
        self._unfinished = 0  # batches created and not yet completed
        self._flushing = 0
        self._closed = False
        self._linger_s = self.config.linger_ms / 1000
        self._sender = threading.Thread(
            target=self._run_sender, name="ray-broker-sender", daemon=True
        )
        self._sender.start()

    # --- public API -----------------------------------------------------------------------------

    def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        headers: Sequence[tuple[str, bytes | None]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> RecordFuture:
        """Queue one record; returns a future of its ``RecordMetadata``.

        Raises:
            TopicNotFound: the topic does not exist (and auto-creation is off).
            SerializationError: key or value is not bytes and no serializer was given.
            RecordTooLarge: key + value exceed the topic's max.message.bytes.
            InvalidPartitions: ``partition`` is not a partition of the topic.
            ProducerClosed: the producer was closed.
            BrokerTimeoutError: buffer.memory stayed full for max.block.ms.
        """
        if self._closed:
            raise ProducerClosed("send() on a closed producer")
        metadata = self._metadata.topic(topic, auto_create=True)
        value = _serialize(value, self.config.value_serializer, "value")
        key = _serialize(key, self.config.key_serializer, "key")
        header_list = _headers(headers)
        size = (len(value) if value is not None else 0) + (len(key) if key is not None else 0)
        if header_list:
            size += sum(len(h["key"].encode()) + len(h["value"] or b"") for h in header_list)
        if size > metadata.config["max.message.bytes"]:
            raise RecordTooLarge(
                f"record of {size} bytes (key, value and headers) exceeds max.message.bytes="
                f"{metadata.config['max.message.bytes']} of topic {topic!r}"
            )
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000  # CreateTime is the producer's clock
        elif (
            not isinstance(timestamp_ms, int)
            or isinstance(timestamp_ms, bool)
            or not 0 <= timestamp_ms <= MAX_TIMESTAMP_MS
        ):
            raise InvalidRecord(
                f"timestamp_ms must be an int of milliseconds in [0, {MAX_TIMESTAMP_MS}], "
                f"got {timestamp_ms!r}"
            )
        with self._cond:
            if partition is None:
                if key is not None:
                    partition = partition_for_key(key, metadata.num_partitions)
                else:
                    partition = self._sticky.get(topic, 0) % metadata.num_partitions
                    self._sticky[topic] = partition  # normalised, so rotation can compare it
            else:
                _check_partition(partition, metadata)
            self._reserve(size)
            queue = self._queue(topic, partition)
            batch = queue.open
            if batch is None:
                batch = queue.open = self._new_batch(topic, partition)
            index = len(batch.values)
            batch.values.append(value)
            batch.keys.append(key)
            if header_list is not None or batch.headers is not None:
                if batch.headers is None:
                    batch.headers = [None] * index
                batch.headers.append(header_list)
            batch.timestamps.append(timestamp_ms)
            batch.size_bytes += size
            if index + 1 >= self.config.batch_size:
                self._close_open_batch(topic, partition, queue)
                self._cond.notify_all()
            elif index == 0:
                self._cond.notify_all()  # the sender must learn this batch's linger deadline
        return RecordFuture(batch, index, timestamp_ms)

    def send_batch(self, topic: str, table: pa.Table | pa.RecordBatch) -> BatchFuture:
        """Queue a whole Arrow table: columns ``value`` and optional ``key``, ``headers``,
        ``timestamp``, ``partition``. Rows with a ``partition`` go there; otherwise rows with
        keys are partitioned by murmur2 of the key; otherwise the whole table goes to one
        partition (the next one in turn), keeping its order.

        Raises:
            TopicNotFound, InvalidRecord, InvalidPartitions, ProducerClosed.
        """
        if self._closed:
            raise ProducerClosed("send_batch() on a closed producer")
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if not isinstance(table, pa.Table):
            raise InvalidRecord(f"send_batch takes a pyarrow Table, got {type(table).__name__}")
        if "value" not in table.column_names:
            raise InvalidRecord("send_batch needs a 'value' column")
        metadata = self._metadata.topic(topic, auto_create=True)
        _check_batch(table, metadata)  # the whole table, before anything is queued
        parts = list(self._split(table, metadata))
        batches: list[ProducerBatch] = []
        with self._cond:
            for partition, part in parts:
                for start in range(0, part.num_rows, MAX_REQUEST_RECORDS):
                    chunk = part.slice(start, MAX_REQUEST_RECORDS)
                    self._reserve(chunk.nbytes)
                    queue = self._queue(topic, partition)
                    self._close_open_batch(topic, partition, queue, rotate_sticky=False)
                    batch = self._new_batch(topic, partition)
                    batch.table = chunk
                    batch.size_bytes = chunk.nbytes
                    queue.ready.append(batch)
                    batches.append(batch)
            self._cond.notify_all()
        return BatchFuture(batches)

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now and wait for its acknowledgements.

        Raises:
            BrokerTimeoutError: not all acknowledged within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._unfinished:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise BrokerTimeoutError(
                            f"flush: {self._unfinished} batch(es) unacknowledged after {timeout} s"
                        )
                    self._cond.wait(remaining)
            finally:
                self._flushing -= 1

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the sender. Further sends raise ProducerClosed."""
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._sender.join(timeout=5)

    def partitions_for(self, topic: str) -> set[int]:
        return set(range(self._metadata.topic(topic).num_partitions))

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- accumulation (caller holds self._cond) -------------------------------------------------

    def _queue(self, topic: str, partition: int) -> _PartitionQueue:
        queue = self._queues.get((topic, partition))
        if queue is None:
            queue = self._queues[(topic, partition)] = _PartitionQueue()
        return queue

    def _new_batch(self, topic: str, partition: int) -> ProducerBatch:
        batch = ProducerBatch(
            topic, partition, time.monotonic() + self.config.delivery_timeout_ms / 1000
        )
        self._unfinished += 1
        return batch

    def _close_open_batch(
        self, topic: str, partition: int, queue: _PartitionQueue, rotate_sticky: bool = True
    ) -> None:
        if queue.open is not None:
            queue.ready.append(queue.open)
            queue.open = None
            if rotate_sticky and self._sticky.get(topic) == partition:
                self._sticky[topic] = partition + 1  # KIP-480: next batch of null keys elsewhere

    def _reserve(self, size: int) -> None:
        deadline = time.monotonic() + self.config.max_block_ms / 1000
        while self._pending_bytes + size > self.config.buffer_memory and self._pending_bytes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerTimeoutError(
                    f"buffer.memory={self.config.buffer_memory} stayed full for "
                    f"max.block.ms={self.config.max_block_ms}; the broker is slower than sends"
                )
            self._cond.notify_all()
            self._cond.wait(remaining)
        self._pending_bytes += size

    def _split(self, table: pa.Table, metadata: TopicMetadata) -> Iterable[tuple[int, pa.Table]]:
        """(partition, rows) pieces of a send_batch table, each in the table's order."""
        n = metadata.num_partitions
        if "partition" in table.column_names:
            parts = table.column("partition").to_numpy(zero_copy_only=False).astype(np.int64)
            yield from _pieces(table.drop_columns(["partition"]), parts)
        elif "key" in table.column_names and table.column("key").null_count < table.num_rows:
            keys = table.column("key")
            if pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type):
                keys = keys.cast(pa.large_binary())  # murmur2 of the UTF-8 bytes
            parts = partitions_for_keys(keys, n)  # vectorized murmur2
            parts[parts < 0] = self._sticky.setdefault(metadata.name, 0) % n  # null keys
            yield from _pieces(table, parts)
        else:
            partition = self._sticky.setdefault(metadata.name, 0) % n
            self._sticky[metadata.name] = partition + 1
            yield partition, table

    # --- sender thread --------------------------------------------------------------------------

    def _run_sender(self) -> None:
        """The sender thread: never exits on an error, only after close() once all is done."""
        while True:
            try:
                if self._sender_round():
                    return
            except Exception:  # a bug must not strand every future: log, back off, go on
                logger.exception("producer sender round failed; continuing")
                time.sleep(self.config.retry_backoff_ms / 1000 or 0.01)

    def _sender_round(self) -> bool:
        """One round of the sender: expire, collect and ship; True when closed and done."""
        with self._cond:
            expired = self._expire_requests(time.monotonic())
        for batch in expired:
            self._on_failure(
                batch,
                BrokerTimeoutError(
                    f"no answer from the leader of {batch.topic}-{batch.partition} within "
                    f"request.timeout.ms={self.config.request_timeout_ms}"
                ),
                batch.attempts,
            )
        with self._cond:
            to_ship = self._collect(time.monotonic())
            if not to_ship:
                if self._closed and not self._unfinished:
                    return True
                # Wakes on new records, replies, or the next linger/backoff/timeout check.
                self._cond.wait(self._next_wakeup(time.monotonic()))
                return False
        for batch in to_ship:
            self._ship(batch)
        return False

    def _next_wakeup(self, now: float) -> float:
        wake = 0.05
        for queue in self._queues.values():
            if queue.open is not None:
                wake = min(wake, queue.open.created + self._linger_s - now)
            if queue.retry or queue.ready:
                wake = min(wake, max(queue.backoff_until - now, 0.001))
        return max(wake, 0.0005)

    def _collect(self, now: float) -> list[ProducerBatch]:
        """Batches to ship now, in per-partition order (caller holds the lock)."""
        out: list[ProducerBatch] = []
        limit = self.config.max_in_flight_requests_per_connection
        for (topic, partition), queue in self._queues.items():
            if queue.open is not None and (
                self._flushing
                or self._closed
                # A lingered, partly full batch waits while the partition has a request in
                # flight: under load records pile into fewer, larger requests (Nagle's idea),
                # when idle they go at once.
                or (now - queue.open.created >= self._linger_s and not queue.in_flight)
            ):
                self._close_open_batch(topic, partition, queue)
            if now < queue.backoff_until:
                continue
            if queue.retry:
                # After a failure resend one batch at a time, oldest first, to keep order.
                if not queue.in_flight:
                    queue.retry.sort(key=lambda b: (b.base_sequence is None, b.base_sequence or 0))
                    batch = queue.retry.pop(0)
                    queue.in_flight.append(batch)
                    out.append(batch)
                continue
            while queue.ready and len(queue.in_flight) < limit:
                batch = queue.ready.popleft()
                queue.in_flight.append(batch)
                out.append(batch)
        return out

    def _ship(self, batch: ProducerBatch) -> None:
        queue = self._queues[(batch.topic, batch.partition)]
        try:
            table = batch.build_table()
            predecessors = False
            if self._producer_id is not None:
                with self._cond:
                    if batch.sequence_generation != queue.sequence_generation:
                        batch.base_sequence = queue.next_sequence
                        batch.sequence_generation = queue.sequence_generation
                        queue.next_sequence = next_sequence(queue.next_sequence, table.num_rows)
                    predecessors = _has_predecessors(queue, batch)
            leader = self._metadata.topic(batch.topic).leader(batch.partition)
            batch.attempts += 1
            batch.sent_at = time.monotonic()
            ref = submit(
                leader.produce,
                table,
                self._producer_id,
                self._epoch,
                batch.base_sequence or 0,
                self.config.acks,
                predecessors,
            )
        except Exception as exc:  # typed by classify(); a build error fails this batch only
            self._on_failure(batch, classify(exc))
            return
        if self.config.acks == 0:
            self._finish(batch, ProduceResult(-1, -1, -1, -1), None)
            return
        attempt = batch.attempts
        ref.future().add_done_callback(lambda fut: self._on_reply(batch, attempt, fut))

    def _on_reply(self, batch: ProducerBatch, attempt: int, fut: Any) -> None:
        try:
            result = fut.result()
        except Exception as exc:  # Ray raises its own types here; classify() maps them
            self._on_failure(batch, classify(exc), attempt)
            return
        with self._cond:
            if attempt != batch.attempts or batch.done.is_set():
                return  # an attempt given up on (request.timeout.ms); a newer one decides
        self._finish(batch, result, None)

    def _expire_requests(self, now: float) -> list[ProducerBatch]:
        """In-flight batches without an answer for request.timeout.ms (a hung leader): they
        are retried, with fresh metadata (caller holds the lock)."""
        limit = self.config.request_timeout_ms / 1000
        return [
            batch
            for queue in self._queues.values()
            for batch in queue.in_flight
            if batch.attempts and now - batch.sent_at > limit
        ]

    def _on_failure(
        self, batch: ProducerBatch, error: BrokerError, attempt: int | None = None
    ) -> None:
        with self._cond:
            if attempt is not None and (attempt != batch.attempts or batch.done.is_set()):
                return  # a reply to an attempt already given up on
        queue = self._queues[(batch.topic, batch.partition)]
        now = time.monotonic()
        if error.retriable and now < batch.deadline:
            with self._cond:
                batch.last_error = error
                if batch in queue.in_flight:
                    queue.in_flight.remove(batch)
                if batch not in queue.retry:
                    queue.retry.append(batch)
                queue.backoff_until = now + self.config.retry_backoff_ms / 1000
                self._cond.notify_all()
            self._metadata.forget(batch.topic)
            return
        if error.retriable:
            error = BrokerTimeoutError(
                f"batch for {batch.topic}-{batch.partition} not acknowledged within "
                f"delivery.timeout.ms={self.config.delivery_timeout_ms} after {batch.attempts} "
                f"attempt(s); last error: {type(error).__name__}: {error}"
            )
        else:
            with self._cond:
                # Nothing of this batch was written, so later batches of the partition will be
                # refused as out of order: rewind the sequence and renumber them on resend.
                if batch.base_sequence is not None and (
                    batch.sequence_generation == queue.sequence_generation
                ):
                    queue.next_sequence = batch.base_sequence
                    queue.sequence_generation += 1
        self._finish(batch, None, error)

    def _finish(
        self, batch: ProducerBatch, result: ProduceResult | None, error: BrokerError | None
    ) -> None:
        with self._cond:
            queue = self._queues[(batch.topic, batch.partition)]
            if batch in queue.in_flight:
                queue.in_flight.remove(batch)
            self._pending_bytes -= batch.size_bytes
            self._unfinished -= 1
            self._cond.notify_all()
        batch.complete(result, error)


def _has_predecessors(queue: _PartitionQueue, batch: ProducerBatch) -> bool:
    """Whether an earlier batch of the partition is still unanswered: only then may the
    partition wait for it before appending ``batch`` (caller holds the lock). In-flight batches
    are kept in sending order, which is sequence order (sequences wrap, so no comparison)."""
    for other in queue.in_flight:
        if other is batch:
            return False
        if other.base_sequence is not None:
            return True
    return False


def _pieces(table: pa.Table, parts: np.ndarray) -> Iterable[tuple[int, pa.Table]]:
    """Rows grouped by partition with one stable sort and slices (not a filter per partition),
    keeping each partition's rows in table order."""
    if len(parts) and (parts == parts[0]).all():
        yield int(parts[0]), table
        return
    order = np.argsort(parts, kind="stable")
    ordered = table.take(pa.array(order))
    sorted_parts = parts[order]
    bounds = np.flatnonzero(np.diff(sorted_parts)) + 1
    for start, end in zip([0, *bounds.tolist()], [*bounds.tolist(), len(parts)], strict=True):
        yield int(sorted_parts[start]), ordered.slice(start, end - start)


def _check_batch(table: pa.Table, metadata: TopicMetadata) -> None:
    """Raises InvalidRecord / InvalidPartitions unless every row of a send_batch table fits."""
    text_or_bytes = (
        pa.types.is_binary,
        pa.types.is_large_binary,
        pa.types.is_string,  # stored as its UTF-8 bytes, as the log does
        pa.types.is_large_string,
    )
    reserved = [name for name in BROKER_COLUMNS if name in table.column_names]
    if reserved:
        raise InvalidRecord(f"columns {reserved} are the broker's own; remove them")
    types = {
        "value": text_or_bytes,
        "key": text_or_bytes,
        "timestamp": (pa.types.is_integer, pa.types.is_timestamp),
        "partition": (pa.types.is_integer,),
    }
    for name, accepted in types.items():
        if name in table.column_names:
            column_type = table.schema.field(name).type
            if not any(check(column_type) for check in accepted) and not pa.types.is_null(
                column_type
            ):
                raise InvalidRecord(f"column {name!r} of type {column_type} is not allowed")
    if "timestamp" in table.column_names:
        stamps = table.column("timestamp").cast(pa.int64())
        if stamps.null_count or (len(stamps) and pc.min(stamps).as_py() < 0):
            raise InvalidRecord("timestamps must be present and >= 0 (ms since the epoch)")
    if "partition" in table.column_names:
        parts = table.column("partition")
        if parts.null_count:
            raise InvalidRecord("the partition column has nulls; give every row a partition")
        if len(parts):
            low, high = pc.min(parts).as_py(), pc.max(parts).as_py()
            if low < 0 or high >= metadata.num_partitions:
                raise InvalidPartitions(
                    f"partitions {low}..{high} requested; topic {metadata.name!r} has partitions "
                    f"0..{metadata.num_partitions - 1}; nothing was sent"
                )


def _serialize(obj: Any, serializer: Callable[[Any], bytes] | None, what: str) -> bytes | None:
    if obj is None:
        return None
    if serializer is not None:
        obj = serializer(obj)
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    raise SerializationError(
        f"{what} must be bytes, got {type(obj).__name__}; pass {what}_serializer= "
        f"(e.g. str.encode or json) to the producer"
    )


def _headers(headers: Sequence[tuple[str, bytes | None]] | None) -> list[dict[str, Any]] | None:
    if headers is None:
        return None
    if isinstance(headers, (str, bytes)) or not isinstance(headers, Sequence):
        raise InvalidRecord(f"headers are a list of (str, bytes) pairs, got {headers!r}")
    out = []
    for item in headers:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise InvalidRecord(f"headers are (str, bytes) pairs, got {item!r}")
        try:
            item[0].encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRecord(f"header name {item[0]!r} is not valid Unicode text") from None
        if item[1] is not None and not isinstance(item[1], bytes):
            raise SerializationError(f"header {item[0]!r} value must be bytes or None")
        out.append({"key": item[0], "value": item[1]})
    return out


def _check_partition(partition: int, metadata: TopicMetadata) -> None:
    if (
        not isinstance(partition, int)
        or isinstance(partition, bool)
        or not 0 <= partition < metadata.num_partitions
    ):
        raise InvalidPartitions(
            f"partition {partition!r} does not exist; topic {metadata.name!r} has partitions "
            f"0..{metadata.num_partitions - 1}"
        )
