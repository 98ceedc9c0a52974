"""A partition replica's state without Ray: its log, producer state, leader epochs and high
watermark. ``PartitionActor`` (``actors/partition/actor.py``) wraps it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_broker.actors.partition.message_trace import TraceRecorder
from ray_broker.actors.partition.producer_state import SEQUENCE_MOD, ProducerStates
from ray_broker.actors.partition.transactions import (
    MARKER_ABORT,
    MARKER_COMMIT,
    PartitionTransactions,
)
from ray_broker.config import RESERVED_PREFIX, TopicConfig
from ray_broker.errors import BrokerError, InvalidRecord, UnknownTopicOrPartition
from ray_broker.storage.epochs import LeaderEpochCache
from ray_broker.storage.log import FILTER_SCAN_RECORDS, Clock, Log, wall_clock_ms
from ray_broker.storage.record_filter import RecordFilter
from ray_broker.storage.schema import (
    ATTR_CONTROL,
    ATTR_TRACED,
    ATTR_TRANSACTIONAL,
    BROKER_COLUMNS,
)
from ray_broker.structs import PartitionOffsets, ProduceResult

# Producer state is rebuilt from this many of the newest records after a restart: far more than
# a producer can have in flight within delivery.timeout.ms at the rates this broker sustains.
PRODUCER_STATE_REBUILD_RECORDS = 500_000
REPLAY_CHUNK_RECORDS = 100_000


class Partition:
    """A partition replica's state, usable without Ray (the actor wraps it)."""

    def __init__(
        self,
        topic: str,
        partition: int,
        directory: str | os.PathLike[str],
        config: TopicConfig,
        clock: Clock = wall_clock_ms,
        replica: str = "r0",
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.clock = clock
        # In remote storage each replica has its own directory (storage/tiered.py).
        remote_path = f"{topic}/partition={partition}/{replica}"
        self.log = Log(directory, config, clock, remote_path=remote_path)
        self.epochs = LeaderEpochCache(directory)
        self.producers = ProducerStates()
        self._rebuild_producers()
        self.txns = PartitionTransactions(directory)
        self._recover_transactions()
        # Nothing is known committed after a start: the high watermark rises as the in-sync
        # replicas report their log ends (at once when this replica is alone).
        self.high_watermark = self.log.log_start_offset
        self.deleted = False
        self.trace = TraceRecorder(topic, partition)

    def _rebuild_producers(self) -> None:
        self.producers = ProducerStates()
        start = max(
            self.log.log_start_offset, self.log.log_end_offset - PRODUCER_STATE_REBUILD_RECORDS
        )
        for chunk in self._chunks_from(start):
            self.producers.rebuild(chunk)

    def _chunks_from(self, start: int) -> Iterator[pa.Table]:
        """The log from ``start`` to its end, in chunks (what recovery replays)."""
        while start < self.log.log_end_offset:
            chunk = self.log.read(start, max_records=REPLAY_CHUNK_RECORDS)
            yield chunk
            start = chunk.column("offset")[-1].as_py() + 1

    def _recover_transactions(self) -> None:
        """Load the transaction events, then observe the write-ahead tail again (a crash may
        have logged records whose events were not written yet)."""
        self.txns.load(self.log.log_end_offset)
        for chunk in self._chunks_from(
            max(self.log.memory_start_offset, self.log.log_start_offset)
        ):
            self.txns.observe(chunk)

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    @property
    def log_end_offset(self) -> int:
        return self.log.log_end_offset

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    def advance_high_watermark(self, committed: int) -> bool:
        """Raise the high watermark to ``committed`` (never past the log end, never down);
        returns True if it moved."""
        new = min(committed, self.log.log_end_offset)
        if new > self.high_watermark:
            self.high_watermark = new
            return True
        return False

    # --- replication ----------------------------------------------------------------------------

    def become_leader(self, epoch: int) -> None:
        """Start writing as the leader of ``epoch`` from the current log end."""
        self.epochs.assign(epoch, self.log.log_end_offset)

    def append_replica(self, batch: pa.Table, epochs: list[tuple[int, int]]) -> int:
        """Copy a leader's batch (offsets included) and the epochs that wrote it; returns the
        new log end offset.

        Raises:
            InvalidRecord: the batch does not continue this log.
        """
        self._check_alive()
        if batch.num_rows:
            base = batch.column("offset")[0].as_py()
            for epoch, start in epochs:
                if start <= base + batch.num_rows - 1 and epoch > self.epochs.latest_epoch:
                    self.epochs.assign(epoch, max(start, base))
            self.log.append_replica(batch)
            self.producers.rebuild(batch)
            self.txns.observe(batch)
        return self.log.log_end_offset

    def truncate_to(self, offset: int) -> None:
        """Cut records at and above ``offset`` (never committed ones: they came from a leader
        that lost its leadership before they were replicated)."""
        self._check_alive()
        if offset < self.log.log_start_offset:
            self.log.reset_to(offset)
        elif offset < self.log.log_end_offset:
            self.log.truncate_to(offset)
        else:
            return
        self.epochs.truncate_from(offset)
        self.high_watermark = min(self.high_watermark, offset)
        self._rebuild_producers()  # a retried batch that was cut must be written again
        self.txns.truncate_to(offset)

    def start_from(self, offset: int) -> None:
        """Continue empty from ``offset`` (the leader no longer has what this replica needs)."""
        self._check_alive()
        self.log.reset_to(offset)
        self.epochs.truncate_from(0)
        self.high_watermark = offset
        self._rebuild_producers()
        self.txns.truncate_to(0)

    def _check_alive(self) -> None:
        if self.deleted:
            raise UnknownTopicOrPartition(f"partition {self.name} was deleted")

    def produce(
        self,
        batch: pa.Table | pa.RecordBatch,
        producer_id: int | None = None,
        producer_epoch: int = 0,
        base_sequence: int = 0,
        transactional: bool = False,
    ) -> ProduceResult:
        """Append a producer batch; with a producer id, deduplicate and order by sequence;
        ``transactional`` batches open (or continue) the producer's transaction here.

        Raises:
            InvalidRecord, RecordTooLarge: the batch is malformed.
            OutOfOrderSequence, ProducerFenced: idempotence checks failed.
            KafkaStorageError: the write-ahead file cannot be written.
        """
        self._check_alive()
        if not isinstance(batch, (pa.Table, pa.RecordBatch)):
            raise InvalidRecord(f"expected a pyarrow Table, got {type(batch).__name__}")
        count = batch.num_rows
        priorities = None
        if "priority" in batch.schema.names:
            batch, priorities = self._take_priorities(batch)
        traced = None
        if "trace" in batch.schema.names:
            batch, traced = self._take_trace(batch)
        if self.log.config.message_trace and not self.topic.startswith(RESERVED_PREFIX):
            traced = np.ones(count, dtype=bool)
        reserved = [n for n in BROKER_COLUMNS if n in batch.schema.names]
        if reserved:
            raise InvalidRecord(
                f"{self.name}: columns {reserved} are written by the partition, not by producers"
            )
        self._check_timestamps(batch)
        if producer_id is not None and count:
            existing = self.producers.check(producer_id, producer_epoch, base_sequence, count)
            if existing is not None:
                return ProduceResult(
                    existing, existing + count - 1, -1, self.log.log_start_offset, duplicate=True
                )
            batch = _with_producer_columns(batch, producer_id, producer_epoch, base_sequence)
        if (
            (transactional and producer_id is not None)
            or priorities is not None
            or traced is not None
        ):
            flags = np.full(count, ATTR_TRANSACTIONAL if transactional else 0, dtype=np.int8)
            if priorities is not None:
                flags |= priorities
            if traced is not None:
                flags[traced] |= ATTR_TRACED
            batch = batch.append_column("attributes", pa.array(flags))
        base, last = self.log.append(batch)
        if traced is not None and traced.any():
            self.trace.appended(
                self.log.read(base, count),
                np.flatnonzero(traced),
                leader_epoch=self.epochs.latest_epoch,
            )
        if producer_id is not None:
            self.producers.record(producer_id, producer_epoch, base_sequence, count, base)
            if transactional:
                self.txns.opened(producer_id, producer_epoch, base)
        append_time = -1
        if self.log.config.message_timestamp_type == "LogAppendTime":
            append_time = self.log.read(base, 1).column("timestamp")[0].as_py()
        return ProduceResult(base, last, append_time, self.log.log_start_offset)

    def _take_priorities(
        self, batch: pa.Table | pa.RecordBatch
    ) -> tuple[pa.Table | pa.RecordBatch, np.ndarray]:
        """The ``priority`` column (0 if null) as the low bits of ``attributes``.

        Raises:
            InvalidRecord: a priority outside 0..priority.levels-1.
        """
        levels = self.log.config.priority_levels
        column = batch.column("priority")
        if not pa.types.is_integer(column.type):
            raise InvalidRecord(f"{self.name}: priority is an integer column, got {column.type}")
        values = pc.fill_null(column, 0)
        if len(values):
            bounds = pc.min_max(values)
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            if low < 0 or high >= levels:
                raise InvalidRecord(
                    f"{self.name}: priorities {low}..{high} are outside 0..{levels - 1} "
                    f"(the topic's priority.levels={levels})"
                )
        index = batch.schema.get_field_index("priority")
        return batch.remove_column(index), values.to_numpy().astype(np.int8)

    def _take_trace(
        self, batch: pa.Table | pa.RecordBatch
    ) -> tuple[pa.Table | pa.RecordBatch, np.ndarray]:
        """The producer's ``trace`` column (records sent with ``trace=True``) as a mask.

        Raises:
            InvalidRecord: the column is not boolean.
        """
        column = batch.column("trace")
        if not pa.types.is_boolean(column.type):
            raise InvalidRecord(f"{self.name}: trace is a boolean column, got {column.type}")
        mask = pc.fill_null(column, False).to_numpy(zero_copy_only=False)
        return batch.remove_column(batch.schema.get_field_index("trace")), mask

    def _check_timestamps(self, batch: pa.Table | pa.RecordBatch) -> None:
        """CreateTime stamps must be >= 0 and within message.timestamp.before/after.max.ms of
        the broker's clock (LogAppendTime topics overwrite them anyway).

        Raises:
            InvalidRecord: a timestamp is negative or too far from now.
        """
        config = self.log.config
        if config.message_timestamp_type != "CreateTime" or "timestamp" not in batch.schema.names:
            return
        stamps = batch.column("timestamp")
        if len(stamps) == 0 or stamps.null_count == len(stamps):
            return
        bounds = pc.min_max(stamps)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        now = self.clock()
        before = config.message_timestamp_before_max_ms
        after = config.message_timestamp_after_max_ms
        if low < 0 or low < now - before or high > now + after:
            raise InvalidRecord(
                f"{self.name}: timestamps {low}..{high} are negative or outside "
                f"[now - message.timestamp.before.max.ms, now + message.timestamp.after.max.ms] "
                f"= [{now - before}, {now + after}]"
            )

    def write_marker(self, producer_id: int, marker_epoch: int, commit: bool) -> int:
        """End the producer's transaction here with a control record (Kafka's marker);
        returns its offset. The marker carries the producer's next epoch, fencing any late
        write of the transaction it ends."""
        self._check_alive()
        marker = pa.table(
            {
                "key": pa.array([MARKER_COMMIT if commit else MARKER_ABORT], pa.binary()),
                "value": pa.array([None], pa.binary()),
                "producer_id": pa.array([producer_id], pa.int64()),
                "producer_epoch": pa.array([marker_epoch], pa.int16()),
                "attributes": pa.array([ATTR_CONTROL | ATTR_TRANSACTIONAL], pa.int8()),
            }
        )
        offset, _ = self.log.append(marker)
        self.producers.bump(producer_id, marker_epoch)
        self.txns.closed(producer_id, offset, commit)
        return offset

    @property
    def last_stable_offset(self) -> int:
        return self.txns.last_stable_offset(self.high_watermark)

    def read(
        self, offset: int, max_records: int, max_bytes: int, read_committed: bool = False
    ) -> pa.Table:
        """Committed records from ``offset`` (below the high watermark; below the last stable
        offset for ``read_committed``), without control records and, for ``read_committed``,
        without aborted transactions' records; ``read_with_next`` also tells where the next
        read starts.

        Raises:
            OffsetOutOfRange: ``offset`` is outside [log start, log end].
        """
        return self.read_with_next(offset, max_records, max_bytes, read_committed)[0]

    def read_with_next(
        self,
        offset: int,
        max_records: int,
        max_bytes: int,
        read_committed: bool = False,
        flt: RecordFilter | None = None,
        max_examined: int = FILTER_SCAN_RECORDS,
    ) -> tuple[pa.Table, int]:
        """``read`` and the offset after the last record it examined (hidden ones and, with a
        filter ``flt``, those it did not match count)."""
        self._check_alive()
        self.log.check_offset(offset)
        limit = self.last_stable_offset if read_committed else self.high_watermark
        if flt is not None:
            if limit <= offset:
                return self.log.read(self.log.log_end_offset, 1), offset
            table, next_offset = self.log.read_filtered(
                offset, limit, flt, max_records, max_bytes, max_examined
            )
            return self.txns.visible(table, read_committed), next_offset
        max_records = min(max_records, limit - offset)
        if max_records <= 0:
            return self.log.read(self.log.log_end_offset, 1), offset
        table = self.log.read(offset, max_records, max_bytes)
        next_offset = table.column("offset")[-1].as_py() + 1 if table.num_rows else offset
        return self.txns.visible(table, read_committed), next_offset

    def offsets(self) -> PartitionOffsets:
        self._check_alive()
        return PartitionOffsets(
            self.log.log_start_offset,
            self.high_watermark,
            self.log.log_end_offset,
            self.last_stable_offset,
        )

    def offset_for_time(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first committed record stamped at or after ``timestamp``."""
        self._check_alive()
        offset = self.log.offset_for_time(timestamp)
        if offset is None or offset >= self.high_watermark:
            return None
        record = self.log.read(offset, 1)
        return record.column("offset")[0].as_py(), record.column("timestamp")[0].as_py()

    def maintain(self) -> dict[str, int]:
        """Periodic housekeeping: roll by segment.ms, retention, compaction, flush.ms, and
        expiry of idle producer ids."""
        self._check_alive()
        expired = self.producers.expire(self.log.config.producer_id_expiration_ms)
        rolled = self.log.maybe_roll()
        deleted = self.log.apply_retention()
        self.txns.forget_before(self.log.log_start_offset)
        compacted = self.log.compact() if self.log.config.compacts else 0
        if self.log.config.flush_ms is not None:
            self.log.flush()
        return {
            "rolled": int(rolled),
            "segments_deleted": len(deleted),
            "compacted": compacted,
            "producers_expired": expired,
        }

    def delete(self) -> None:
        """Remove the partition's files; every later call raises UnknownTopicOrPartition."""
        if not self.deleted:
            self.log.close()
            shutil.rmtree(self.log.directory, ignore_errors=True)
            with contextlib.suppress(BrokerError):  # remote storage unreachable: files stay
                tier = self.log.remote_tier()
                if tier is not None:
                    tier.delete_all()
            self.deleted = True


def _with_producer_columns(
    batch: pa.Table | pa.RecordBatch, producer_id: int, epoch: int, base_sequence: int
) -> pa.Table:
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    n = table.num_rows
    for name in ("producer_id", "producer_epoch", "sequence"):
        if name in table.column_names:
            table = table.drop_columns([name])
    return (
        table.append_column("producer_id", pa.array(np.full(n, producer_id, dtype=np.int64)))
        .append_column("producer_epoch", pa.array(np.full(n, epoch, dtype=np.int16)))
        .append_column(
            "sequence",
            pa.array(
                (np.arange(base_sequence, base_sequence + n, dtype=np.int64) % SEQUENCE_MOD).astype(
                    np.int32
                )
            ),
        )
    )
