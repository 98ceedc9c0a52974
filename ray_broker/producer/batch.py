"""The units the producer queues, and the futures its callers wait on.

``send()`` appends to a topic's ``PendingRecords`` (plain lists, no partitioning yet: that is
done for the whole buffer at once, vectorized, when it is sealed). Sealing turns the buffer into
one ``ProducerBatch`` per partition it touches; a ``ProducerBatch`` is what is shipped, retried
and acknowledged as one unit. A ``RecordFuture`` points at its row of the buffer and, once the
buffer is split, at its partition's batch.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from ray_broker.errors import BrokerError, BrokerTimeoutError
from ray_broker.storage.ipc import to_ipc
from ray_broker.storage.schema import HEADER_TYPE
from ray_broker.structs import BatchMetadata, ProduceResult, RecordMetadata

logger = logging.getLogger(__name__)


class _Completion:
    """A done flag with callbacks, set once; callbacks run on the thread that completes it."""

    __slots__ = ("done", "callbacks", "lock")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.callbacks: list[Callable[[], None]] = []
        self.lock = threading.Lock()

    def fire(self) -> None:
        with self.lock:
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


class ProducerBatch:
    """Records bound for one partition, shipped (and retried) as one unit."""

    __slots__ = (
        "topic",
        "partition",
        "table",
        "ipc",
        "size_bytes",
        "created",
        "deadline",
        "base_sequence",
        "sequence_generation",
        "attempts",
        "sent_at",
        "submitted_ns",
        "result",
        "error",
        "last_error",
        "final",
        "followers",
        "completion",
    )

    def __init__(
        self, topic: str, partition: int, table: pa.Table, created: float, deadline: float
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.table = table
        self.ipc: pa.Buffer | None = None
        self.size_bytes = table.nbytes
        self.created = created
        self.deadline = deadline
        self.base_sequence: int | None = None
        self.sequence_generation = -1
        self.attempts = 0
        self.sent_at = 0.0
        self.submitted_ns = 0  # when the last attempt was handed to Ray (for ``hops``)
        self.result: ProduceResult | None = None
        self.error: BrokerError | None = None
        self.last_error: BrokerError | None = None
        self.final = False  # its outcome is decided (set under the producer's lock)
        # Batches merged into this one before it was first sent, with their first row here.
        self.followers: list[tuple[ProducerBatch, int]] = []
        self.completion = _Completion()

    @property
    def record_count(self) -> int:
        return self.table.num_rows

    def payload(self) -> pa.Buffer:
        """What is shipped: the IPC stream, written once and reused by retries."""
        if self.ipc is None:
            self.ipc = to_ipc(self.table)
        return self.ipc

    @property
    def done(self) -> threading.Event:
        return self.completion.done

    def absorb(self, other: ProducerBatch) -> None:
        """Carry ``other``'s records in this batch's request (it was never sent); ``other``
        completes with this one, at its own offsets. Fewer, larger requests: a keyed table spread
        over N partitions otherwise makes N small calls per table."""
        assert self.attempts == 0 and other.attempts == 0 and not other.followers
        self.followers.append((other, self.table.num_rows))
        self.table = pa.concat_tables([self.table, other.table])
        self.size_bytes += other.size_bytes
        other.deadline = self.deadline = min(self.deadline, other.deadline)

    def complete(self, result: ProduceResult | None, error: BrokerError | None) -> None:
        self.result, self.error = result, error
        self.completion.fire()
        for follower, start in self.followers:
            follower.complete(_shifted(result, start, follower.record_count), error)


def _shifted(result: ProduceResult | None, start: int, count: int) -> ProduceResult | None:
    """The part of a request's result that covers rows [start, start + count)."""
    if result is None or result.base_offset < 0:
        return result
    base = result.base_offset + start
    return dataclasses.replace(result, base_offset=base, last_offset=base + count - 1)


class PendingRecords:
    """Records of one topic appended by ``send()`` and not yet split into partition batches.

    Kept as plain lists because appending to a list is the cheapest thing Python can do per
    record; the columns become Arrow and the partitions are computed once per buffer.
    """

    __slots__ = (
        "topic",
        "num_partitions",
        "limit",
        "keys",
        "values",
        "headers",
        "partitions",
        "priorities",
        "traced",
        "timestamps",
        "size_bytes",
        "created",
        "deadline",
        "pieces",
        "row_piece",
        "row_index",
        "error",
        "completion",
    )

    def __init__(
        self, topic: str, num_partitions: int, limit: int, created: float, deadline: float
    ) -> None:
        self.topic = topic
        self.num_partitions = num_partitions
        self.limit = limit  # sealed when it holds this many records
        self.keys: list[bytes | None] = []
        self.values: list[bytes | None] = []
        self.headers: list[Any] | None = None  # made on the first record with headers
        self.partitions: list[int | None] | None = None  # made on the first explicit partition
        self.priorities: list[int] | None = None  # made on the first record with a priority
        self.traced: list[bool] | None = None  # made on the first record sent with trace=True
        self.timestamps: list[int] = []
        self.size_bytes = 0
        self.created = created
        self.deadline = deadline
        # After the split: the batches, and for each row its batch and its index in that batch
        # (None when every row went to pieces[0] in order).
        self.pieces: list[ProducerBatch] = []
        self.row_piece: np.ndarray | None = None
        self.row_index: np.ndarray | None = None
        self.error: BrokerError | None = None  # the split itself failed
        self.completion = _Completion()  # fired when split (or failed)

    def __len__(self) -> int:
        return len(self.values)

    def build_table(self) -> pa.Table:
        columns: dict[str, pa.Array] = {"value": pa.array(self.values, pa.binary())}
        if any(k is not None for k in self.keys):
            columns["key"] = pa.array(self.keys, pa.binary())
        if self.headers is not None:
            columns["headers"] = pa.array(self.headers, HEADER_TYPE)
        columns["timestamp"] = pa.array(self.timestamps, pa.int64())
        if self.priorities is not None:
            columns["priority"] = pa.array(self.priorities, pa.int8())
        if self.traced is not None:
            columns["trace"] = pa.array(self.traced, pa.bool_())
        return pa.table(columns)

    def placed(self, index: int) -> tuple[ProducerBatch, int]:
        """The batch that row ``index`` went to and its index there (after the split)."""
        if self.row_piece is None:
            return self.pieces[0], index
        assert self.row_index is not None
        return self.pieces[int(self.row_piece[index])], int(self.row_index[index])

    def split_into(
        self,
        pieces: list[ProducerBatch],
        row_piece: np.ndarray | None,
        row_index: np.ndarray | None,
    ) -> None:
        """Point the rows at their batches; the caller fires ``completion`` once it holds no
        lock (callbacks are the application's code)."""
        self.pieces, self.row_piece, self.row_index = pieces, row_piece, row_index
        self.keys, self.values, self.headers, self.partitions = [], [], None, None
        self.priorities = None

    def fail(self, error: BrokerError) -> None:
        """The buffer could not be split; the caller fires ``completion`` (see split_into)."""
        self.error = error
        self.keys, self.values, self.headers, self.partitions = [], [], None, None
        self.priorities = None


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


class RecordFuture:
    """The eventual ``RecordMetadata`` of one ``send()``; resolves when its batch is acked."""

    __slots__ = ("_records", "_index", "_timestamp")

    def __init__(self, records: PendingRecords, index: int, timestamp: int) -> None:
        self._records = records
        self._index = index
        self._timestamp = timestamp

    def done(self) -> bool:
        records = self._records
        if not records.completion.done.is_set():
            return False
        return records.error is not None or records.placed(self._index)[0].done.is_set()

    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Wait for the acknowledgement.

        Raises:
            BrokerTimeoutError: not acknowledged within ``timeout`` seconds (the send goes on).
            BrokerError: the delivery failed (the typed reason, e.g. RecordTooLarge).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        records = self._records
        if not records.completion.done.wait(timeout):
            raise BrokerTimeoutError(f"record not acknowledged within {timeout} s (still pending)")
        if records.error is not None:
            raise records.error
        batch, index = records.placed(self._index)
        if not batch.done.wait(_remaining(deadline)):
            raise BrokerTimeoutError(f"record not acknowledged within {timeout} s (still pending)")
        if batch.error is not None:
            raise batch.error
        assert batch.result is not None
        offset = -1 if batch.result.base_offset < 0 else batch.result.base_offset + index
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

        def when_split() -> None:
            if self._records.error is not None:
                fn(self)
            else:
                self._records.placed(self._index)[0].completion.on_done(lambda: fn(self))

        self._records.completion.on_done(when_split)


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
            if not batch.done.wait(_remaining(deadline)):
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
