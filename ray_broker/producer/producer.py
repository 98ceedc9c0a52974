"""The public producer: ``send()`` one record or ``send_batch()`` an Arrow table.

``send()`` costs a few microseconds: it checks the record, appends it to its topic's open
buffer (plain lists) and returns a light future; partitioning (murmur2 of the keys) and Arrow
conversion happen once per buffer, vectorized, on the sender thread. A buffer is sealed when it
holds ``batch.size`` records or has waited ``linger.ms``; up to
``max.in.flight.requests.per.connection`` requests per partition are in flight.

Delivery is at-least-once with retries inside ``delivery.timeout.ms`` and, with
``enable.idempotence`` (the default, as in Kafka 3), exactly-once per partition: every batch
carries (producer id, epoch, base sequence), so a batch retried after its partition actor died
is recognised if it had been written, and batches are written in order.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ray_broker.config import DELAY_TOPIC, TRANSACTIONAL_ID_SPACE, ProducerConfig, client_config
from ray_broker.errors import (
    BrokerTimeoutError,
    InvalidConfig,
    InvalidRecord,
    InvalidTxnState,
    ProducerClosed,
    RecordTooLarge,
)
from ray_broker.metadata import MetadataCache
from ray_broker.partition_transport import PartitionTransport
from ray_broker.producer.accumulator import AccumulatorSettings, RecordAccumulator
from ray_broker.producer.batch import BatchFuture, RecordFuture
from ray_broker.producer.delayed import (
    DelayedFuture,
    DelayRoute,
    delay_headers,
    delay_route,
    due_time,
    target_partition,
)
from ray_broker.producer.partitioner import assign_partitions, group_by_partition
from ray_broker.producer.records import (
    check_partition,
    check_priority,
    check_table,
    check_timestamp,
    header_list,
    headers_size,
    serialize,
)
from ray_broker.producer.sender import Sender
from ray_broker.producer.transactions import TransactionManager
from ray_broker.structs import TopicMetadata

# How long send() trusts its own copy of a topic's metadata before asking the shared cache
# (which the sender refreshes on errors): new partitions are seen within this time.
TOPIC_SNAPSHOT_S = 1.0


class Producer:
    """Sends records to topics; thread-safe; use as a context manager or call ``close()``."""

    def __init__(
        self,
        metadata: MetadataCache,
        transactions: Callable[[], Any] | None = None,
        group_coordinator: Any = None,
        delays: Callable[[], tuple[int, int]] | None = None,
        **options: Any,
    ) -> None:
        self.config: ProducerConfig = client_config(ProducerConfig, options)
        self._txn: TransactionManager | None = None
        if self.config.transactional_id is not None:
            if not self.config.enable_idempotence or self.config.acks != -1:
                raise InvalidConfig(
                    "a transactional producer needs enable.idempotence=True and acks='all'"
                )
            if transactions is None:
                raise InvalidConfig("transactions need a broker: use broker.producer(...)")
            self._txn = TransactionManager(
                self.config.transactional_id,
                self.config.transaction_timeout_ms,
                transactions,
                group_coordinator,
                self.config.max_block_ms / 1000,
                self.config.retry_backoff_ms / 1000,
            )
        self._metadata = metadata
        self._delay_factory = delays
        self._delays: tuple[int, int] | None = None
        self._delay_routes: dict[tuple[str, int], DelayRoute] = {}
        self._accumulator = RecordAccumulator(AccumulatorSettings.of(self.config))
        self._cond = threading.Condition(threading.Lock())
        self._lock = self._cond._lock  # type: ignore[attr-defined]  # the hot path skips a call
        # topic -> (trusted until, metadata, max.message.bytes): send() reads no shared state.
        self._topics: dict[str, tuple[float, TopicMetadata, int]] = {}
        self._key_serializer = self.config.key_serializer
        self._value_serializer = self.config.value_serializer
        self._buffer_memory = self.config.buffer_memory
        self._closed = False
        # Random ids of idempotent producers lie above the transactional id space, which the
        # transaction coordinator allocates from (actors/coordination/transaction_state.py).
        producer_id = (
            TRANSACTIONAL_ID_SPACE + secrets.randbelow(2**62 - TRANSACTIONAL_ID_SPACE)
            if self.config.enable_idempotence
            else None
        )
        self._sender = Sender(
            self._accumulator,
            self._cond,
            metadata,
            producer_id,
            self.config.acks,
            self._txn,
            self.config.client_id,
            PartitionTransport(self.config.data_plane, lane="produce"),
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
        priority: int | None = None,
        delay_ms: int | None = None,
        deliver_at: int | None = None,
        trace: bool = False,
    ) -> RecordFuture | DelayedFuture:
        """Queue one record; returns a future of its ``RecordMetadata``.

        ``priority`` (0 = lowest, up to the topic's ``priority.levels`` - 1) orders delivery to
        share groups; consumer groups read in offset order regardless.

        ``delay_ms`` (from now) or ``deliver_at`` (epoch ms) delivers the record later: it
        waits in the broker's schedule topic and appears in ``topic`` when due (within ~100 ms
        under normal load), exactly once for ``read_committed`` readers. Its future's metadata
        has ``offset`` -1 and ``timestamp`` = the due time (see ``producer/delayed.py``).

        ``trace=True`` records the record's trail (appended, committed, delivered,
        acknowledged…) in the broker's trace log, as the topic config ``message.trace`` does
        for every record; a ``trace.id`` header, if given, lets ``ray-broker trace --id`` find
        it (see ``actors/partition/message_trace.py``).

        Raises:
            TopicNotFound: the topic does not exist (and auto-creation is off).
            SerializationError: key or value is not bytes and no serializer was given.
            RecordTooLarge: key + value + headers exceed the topic's max.message.bytes.
            InvalidPartitions: ``partition`` is not a partition of the topic.
            InvalidRecord: bad headers or timestamp.
            ProducerClosed: the producer was closed.
            BrokerTimeoutError: buffer.memory stayed full for max.block.ms.
        """
        if self._closed:
            raise ProducerClosed("send() on a closed producer")
        if self._txn is not None:
            self._txn.check_send()
        snapshot = self._topics.get(topic)
        if snapshot is None or time.monotonic() > snapshot[0]:
            snapshot = self._snapshot(topic)
        _, metadata, max_bytes = snapshot
        if value.__class__ is not bytes or self._value_serializer is not None:
            value = serialize(value, self._value_serializer, "value")
        if key is not None and (key.__class__ is not bytes or self._key_serializer is not None):
            key = serialize(key, self._key_serializer, "key")
        size = (0 if value is None else len(value)) + (0 if key is None else len(key))
        header_dicts = None
        if headers is not None:
            header_dicts = header_list(headers)
            size += headers_size(header_dicts)
        if size > max_bytes:
            raise RecordTooLarge(
                f"record of {size} bytes (key, value and headers) exceeds max.message.bytes="
                f"{max_bytes} of topic {topic!r}",
                topic=topic,
                size=size,
                limit=max_bytes,
            )
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000  # CreateTime is the producer's clock
        else:
            check_timestamp(timestamp_ms)
        if partition is not None:
            check_partition(partition, metadata)
        if priority is not None:
            check_priority(priority, metadata)
        if trace.__class__ is not bool:
            raise InvalidRecord(f"trace is True or False, got {trace!r}")
        delayed = None
        if delay_ms is not None or deliver_at is not None:
            max_delay_ms, schedule_partitions = self._delay_settings()
            due = due_time(delay_ms, deliver_at, timestamp_ms, max_delay_ms)
            if due > timestamp_ms:  # else: due already, sent as it is
                # The record goes to the schedule topic, with where and when it belongs.
                target = target_partition(key, partition, metadata.num_partitions)
                delayed = (topic, target, due)
                route = self._delay_routes.get((topic, target))
                if route is None:
                    route = self._delay_routes[(topic, target)] = delay_route(
                        topic, target, schedule_partitions
                    )
                extra = delay_headers(route, due, priority, trace)
                header_dicts = (header_dicts or []) + extra
                size += headers_size(extra)
                partition = route.schedule_partition
                topic, priority = DELAY_TOPIC, None
                snapshot = self._topics.get(topic)
                if snapshot is None or time.monotonic() > snapshot[0]:
                    snapshot = self._snapshot(topic)
                metadata = snapshot[1]
        accumulator = self._accumulator
        with self._lock:
            if accumulator.pending_bytes + size > self._buffer_memory:
                self._wait_for_memory(size)
            future, wake = accumulator.append(
                topic,
                metadata.num_partitions,
                key,
                value,
                size,
                timestamp_ms,
                header_dicts,
                partition,
                priority,
                trace and delayed is None,  # a delayed record is traced when it is delivered
            )
            if wake:
                self._cond.notify_all()
        return future if delayed is None else DelayedFuture(future, *delayed)

    def _delay_settings(self) -> tuple[int, int]:
        """(delay.max.ms, schedule partitions), once the schedule topic and its scheduler run.

        Raises:
            InvalidConfig: the producer was made without a broker (no scheduler to start).
        """
        if self._delays is None:
            if self._delay_factory is None:
                raise InvalidConfig("delayed sends need a broker: use broker.producer(...)")
            self._delays = self._delay_factory()
        return self._delays

    def send_batch(self, topic: str, table: pa.Table | pa.RecordBatch) -> BatchFuture:
        """Queue a whole Arrow table: columns ``value`` and optional ``key``, ``headers``,
        ``timestamp``, ``partition``. Rows with a ``partition`` go there; otherwise rows with
        keys are partitioned by murmur2 of the key; otherwise the whole table goes to one
        partition (the next one in turn), keeping its order.

        Raises:
            TopicNotFound, InvalidRecord, InvalidPartitions, ProducerClosed,
            BrokerTimeoutError (buffer.memory stayed full for max.block.ms).
        """
        if self._closed:
            raise ProducerClosed("send_batch() on a closed producer")
        if self._txn is not None:
            self._txn.check_send()
        metadata = self._snapshot(topic)[1]
        table = check_table(table, metadata)  # the whole table, before anything is queued
        explicit = None
        if "partition" in table.column_names:
            explicit = table.column("partition").to_numpy(zero_copy_only=False)
            table = table.drop_columns(["partition"])
        keys = table.column("key") if "key" in table.column_names else None
        if keys is not None and keys.null_count == len(keys):
            keys = None
        accumulator = self._accumulator
        parts, used_sticky = assign_partitions(
            table.num_rows,
            keys,
            explicit,
            metadata.num_partitions,
            accumulator.sticky.get(topic, 0),
        )
        pieces, _, _ = group_by_partition(table, parts, np.iinfo(np.int64).max)
        with self._lock:
            accumulator.next_sticky(topic, used_sticky)
            if accumulator.pending_bytes + table.nbytes > self._buffer_memory:
                self._wait_for_memory(table.nbytes)
            batches = accumulator.append_table(topic, pieces)
            self._cond.notify_all()
        return BatchFuture(batches)

    # --- transactions (KIP-98; kafka-python's names) ---------------------------------------------

    def _transactions(self, doing: str) -> TransactionManager:
        if self._txn is None:
            raise InvalidTxnState(f"{doing}: this producer has no transactional_id")
        return self._txn

    def init_transactions(self) -> None:
        """Register the transactional id: fences older producers with the same id and aborts
        a transaction they left open. Call once, before the first transaction.

        Raises:
            InvalidTxnState, ProducerFenced, BrokerTimeoutError.
        """
        self._transactions("init_transactions").init()

    def begin_transaction(self) -> None:
        """Start a transaction: sends until commit or abort belong to it.

        Raises:
            InvalidTxnState: not initialised, or a transaction is already open.
        """
        self._transactions("begin_transaction").begin()

    def send_offsets_to_transaction(self, offsets: dict[Any, Any], group_metadata: Any) -> None:
        """Commit a consumer group's offsets with the transaction (consume-transform-produce):
        ``offsets`` maps ``TopicPartition`` to the next offset to read (an int or
        ``OffsetAndMetadata``); ``group_metadata`` is ``consumer.group_metadata()``.

        Raises:
            InvalidTxnState: no open transaction, or no group.
            IllegalGeneration, CommitFailed: the consumer is no longer the partitions' owner.
        """
        manager = self._transactions("send_offsets_to_transaction")
        normalised: dict[tuple[str, int], tuple[int, str]] = {}
        for tp, value in dict(offsets).items():
            offset = getattr(value, "offset", value)
            metadata = getattr(value, "metadata", "") or ""
            normalised[(tp[0], int(tp[1]))] = (offset, metadata)
        manager.send_offsets(normalised, group_metadata)

    def commit_transaction(self, timeout: float | None = None) -> None:
        """Send what is queued, then commit: every record of the transaction becomes visible
        to read_committed consumers at once, with the offsets sent to it.

        Raises:
            TransactionAborted: a send failed; call abort_transaction().
            TransactionTimedOut: it ran past transaction.timeout.ms and was aborted.
            InvalidTxnState, ProducerFenced, BrokerTimeoutError.
        """
        manager = self._transactions("commit_transaction")
        manager.check_end(commit=True)
        self.flush(timeout)
        self._end_transaction(manager, commit=True)

    def abort_transaction(self, timeout: float | None = None) -> None:
        """Abort: read_committed consumers never see the transaction's records, and the
        offsets sent to it are dropped.

        Raises:
            InvalidTxnState, ProducerFenced, BrokerTimeoutError.
        """
        manager = self._transactions("abort_transaction")
        manager.check_end(commit=False)
        self.flush(timeout)  # nothing of the transaction may still be on its way
        self._end_transaction(manager, commit=False)

    def _end_transaction(self, manager: TransactionManager, commit: bool) -> None:
        manager.end(commit)
        with self._cond:
            self._accumulator.restart_sequences()  # the next epoch numbers from 0

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now and wait for its acknowledgements.

        Raises:
            BrokerTimeoutError: not all acknowledged within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        accumulator = self._accumulator
        with self._cond:
            accumulator.flushing += 1
            self._cond.notify_all()
            try:
                while not accumulator.idle:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise BrokerTimeoutError(
                            f"flush: {accumulator.unfinished} batch(es) unacknowledged after "
                            f"{timeout} s"
                        )
                    self._cond.wait(remaining)
            finally:
                accumulator.flushing -= 1

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the sender. Further sends raise ProducerClosed."""
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            with self._cond:
                self._accumulator.closed = True
                self._cond.notify_all()
            self._sender.join(timeout=5)

    def partitions_for(self, topic: str) -> set[int]:
        return set(range(self._metadata.topic(topic).num_partitions))

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers ----------------------------------------------------------------------------------

    def _snapshot(self, topic: str) -> tuple[float, TopicMetadata, int]:
        metadata = self._metadata.topic(topic, auto_create=True)
        snapshot = (
            time.monotonic() + TOPIC_SNAPSHOT_S,
            metadata,
            int(metadata.config["max.message.bytes"]),
        )
        self._topics[topic] = snapshot
        return snapshot

    def _wait_for_memory(self, size: int) -> None:
        """Block (holding the condition) until ``size`` bytes fit in buffer.memory."""
        deadline = time.monotonic() + self.config.max_block_ms / 1000
        accumulator = self._accumulator
        while accumulator.pending_bytes + size > self._buffer_memory and accumulator.pending_bytes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerTimeoutError(
                    f"buffer.memory={self._buffer_memory} stayed full for "
                    f"max.block.ms={self.config.max_block_ms}; the broker is slower than sends"
                )
            self._cond.notify_all()
            self._cond.wait(remaining)
