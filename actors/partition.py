"""A partition replica: the plain ``Partition`` logic and the ``PartitionActor`` Ray shell.

One async actor per partition owns one ``Log``. Everything that touches the log runs on the
actor's single event loop, so the log needs no locks: a long-poll fetch waits with ``await``
(it never blocks produce), and the only blocking work — writing a rolled segment's Parquet file —
runs on a worker thread and is installed back on the loop.

DESIGN.md suggested concurrency groups (produce / fetch). Each group has its own thread and loop,
which would share the log across threads and need cross-loop wake-ups on every append; one loop
gives the same isolation for waiting fetches without that cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from typing import Any

import numpy as np
import pyarrow as pa

from ray_broker.actors.producer_state import ProducerStates
from ray_broker.config import TopicConfig, parse_config
from ray_broker.errors import InvalidRecord, UnknownTopicOrPartition
from ray_broker.storage.log import Clock, Log, wall_clock_ms
from ray_broker.structs import FetchResponse, PartitionOffsets, ProduceResult

logger = logging.getLogger(__name__)

# Producer state is rebuilt from this many of the newest records after a restart: far more than
# a producer can have in flight within delivery.timeout.ms at the rates this broker sustains.
PRODUCER_STATE_REBUILD_RECORDS = 500_000
# How long a producer batch that arrived before its predecessor waits for it (Ray does not
# order an async actor's calls). Past this an unknown producer starts fresh and a known one gets
# OutOfOrderSequence and resends in order.
SEQUENCE_WAIT_MS = 5_000


class Partition:
    """A partition replica's state, usable without Ray (the actor wraps it)."""

    def __init__(
        self,
        topic: str,
        partition: int,
        directory: str | os.PathLike[str],
        config: TopicConfig,
        clock: Clock = wall_clock_ms,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.log = Log(directory, config, clock)
        self.producers = ProducerStates()
        start = max(
            self.log.log_start_offset, self.log.log_end_offset - PRODUCER_STATE_REBUILD_RECORDS
        )
        while start < self.log.log_end_offset:
            chunk = self.log.read(start, max_records=100_000)
            self.producers.rebuild(chunk)
            start = chunk.column("offset")[-1].as_py() + 1
        self.deleted = False

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    @property
    def high_watermark(self) -> int:
        return self.log.log_end_offset  # one replica: everything appended is committed

    def _check_alive(self) -> None:
        if self.deleted:
            raise UnknownTopicOrPartition(f"partition {self.name} was deleted")

    def produce(
        self,
        batch: pa.Table | pa.RecordBatch,
        producer_id: int | None = None,
        producer_epoch: int = 0,
        base_sequence: int = 0,
    ) -> ProduceResult:
        """Append a producer batch; with a producer id, deduplicate and order by sequence.

        Raises:
            InvalidRecord, RecordTooLarge: the batch is malformed.
            OutOfOrderSequence, ProducerFenced: idempotence checks failed.
            KafkaStorageError: the write-ahead file cannot be written.
        """
        self._check_alive()
        if not isinstance(batch, (pa.Table, pa.RecordBatch)):
            raise InvalidRecord(f"expected a pyarrow Table, got {type(batch).__name__}")
        count = batch.num_rows
        if producer_id is not None and count:
            existing = self.producers.check(producer_id, producer_epoch, base_sequence, count)
            if existing is not None:
                return ProduceResult(
                    existing, existing + count - 1, -1, self.log.log_start_offset, duplicate=True
                )
            batch = _with_producer_columns(batch, producer_id, producer_epoch, base_sequence)
        base, last = self.log.append(batch)
        if producer_id is not None:
            self.producers.record(producer_id, producer_epoch, base_sequence, count, base)
        append_time = -1
        if self.log.config.message_timestamp_type == "LogAppendTime":
            append_time = self.log.read(base, 1).column("timestamp")[0].as_py()
        return ProduceResult(base, last, append_time, self.log.log_start_offset)

    def read(self, offset: int, max_records: int, max_bytes: int) -> pa.Table:
        """Committed records from ``offset`` (below the high watermark).

        Raises:
            OffsetOutOfRange: ``offset`` is outside [log start, log end].
        """
        self._check_alive()
        self.log.check_offset(offset)
        max_records = min(max_records, self.high_watermark - offset)
        if max_records <= 0:
            return self.log.read(self.log.log_end_offset, 1)
        return self.log.read(offset, max_records, max_bytes)

    def offsets(self) -> PartitionOffsets:
        self._check_alive()
        return PartitionOffsets(
            self.log.log_start_offset, self.high_watermark, self.log.log_end_offset
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
        """Periodic housekeeping: roll by segment.ms, retention, compaction, flush.ms."""
        self._check_alive()
        rolled = self.log.maybe_roll()
        deleted = self.log.apply_retention()
        compacted = self.log.compact() if self.log.config.compacts else 0
        if self.log.config.flush_ms is not None:
            self.log.flush()
        return {"rolled": int(rolled), "segments_deleted": len(deleted), "compacted": compacted}

    def delete(self) -> None:
        """Remove the partition's files; every later call raises UnknownTopicOrPartition."""
        if not self.deleted:
            self.log.close()
            shutil.rmtree(self.log.directory, ignore_errors=True)
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
            pa.array(np.arange(base_sequence, base_sequence + n, dtype=np.int32)),
        )
    )


def records_to_ipc(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


class PartitionActor:
    """The Ray actor around ``Partition``: long-poll fetches, background sealing, housekeeping.

    Created by the Controller with ``max_restarts=-1``: a restarted actor rebuilds its log from
    its files in ``__init__`` and loses nothing it acknowledged (acknowledged = in the WAL).
    """

    def __init__(
        self,
        topic: str,
        partition: int,
        directory: str,
        config: dict[str, Any],
        maintenance_interval_ms: int = 60_000,
        fetch_max_wait_cap_ms: int = 30_000,
    ) -> None:
        self.core = Partition(topic, partition, directory, parse_config(TopicConfig, config))
        self._maintenance_interval_s = maintenance_interval_ms / 1000
        self._fetch_wait_cap_ms = fetch_max_wait_cap_ms
        self._data_arrived: asyncio.Event | None = None
        self._background: list[asyncio.Task[None]] = []
        self._sealing: asyncio.Task[None] | None = None
        self.started_at = time.time()

    def _start_background(self) -> None:
        if not self._background and not self.core.deleted:
            self._data_arrived = asyncio.Event()
            self._background.append(asyncio.get_running_loop().create_task(self._maintenance()))

    async def ready(self) -> PartitionOffsets:
        self._start_background()
        return self.core.offsets()

    async def info(self) -> dict[str, Any]:
        """Where this replica runs (node, pid) and its offsets; for describe and fault tests."""
        import ray

        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "offsets": self.core.offsets(),
        }

    async def produce(
        self,
        batch: pa.Table,
        producer_id: int | None = None,
        producer_epoch: int = 0,
        base_sequence: int = 0,
        acks: int = -1,
    ) -> ProduceResult:
        self._start_background()
        if producer_id is not None:
            await self._await_predecessors(producer_id, producer_epoch, base_sequence)
        result = self.core.produce(batch, producer_id, producer_epoch, base_sequence)
        if not result.duplicate:
            self._wake_fetchers()
            self._seal_in_background()
        return result

    async def _await_predecessors(self, producer_id: int, epoch: int, sequence: int) -> None:
        deadline = time.monotonic() + SEQUENCE_WAIT_MS / 1000
        while self.core.producers.is_ahead(producer_id, epoch, sequence):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._data_arrived is None:
                return  # produce() decides: a fresh start, or OutOfOrderSequence
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._data_arrived.wait(), remaining)

    def _seal_in_background(self) -> asyncio.Task[None] | None:
        """One sealing task at a time: two would write the same segment's Parquet file."""
        if self._sealing is None and self.core.log.next_segment_to_seal() is not None:
            self._sealing = asyncio.get_running_loop().create_task(self._seal())
        return self._sealing

    def _wake_fetchers(self) -> None:
        if self._data_arrived is not None:
            self._data_arrived.set()
            self._data_arrived = asyncio.Event()

    async def fetch(
        self, offset: int, max_records: int, max_bytes: int, max_wait_ms: int = 0
    ) -> FetchResponse:
        """Records from ``offset``; waits up to ``max_wait_ms`` for the first one (long poll)."""
        self._start_background()
        deadline = time.monotonic() + min(max_wait_ms, self._fetch_wait_cap_ms) / 1000
        while True:
            table = self.core.read(offset, max_records, max_bytes)
            remaining = deadline - time.monotonic()
            if table.num_rows or remaining <= 0 or self._data_arrived is None:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._data_arrived.wait(), remaining)
        return FetchResponse(
            records_to_ipc(table),
            table.num_rows,
            self.core.high_watermark,
            self.core.log.log_start_offset,
        )

    async def offsets(self) -> PartitionOffsets:
        return self.core.offsets()

    async def offset_for_time(self, timestamp: int) -> tuple[int, int] | None:
        return self.core.offset_for_time(timestamp)

    async def update_config(self, config: dict[str, Any]) -> None:
        self.core.log.config = parse_config(TopicConfig, config)

    async def maintain(self) -> dict[str, int]:
        """Run housekeeping now (the background loop runs it every retention check interval)."""
        report = self.core.maintain()
        sealing = self._seal_in_background()
        if sealing is not None:
            await sealing
        return report

    async def close(self) -> None:
        """Finish sealing and close the log's files (before the actor is killed)."""
        for task in self._background:
            task.cancel()
        if self._sealing is not None:
            with contextlib.suppress(Exception):
                await self._sealing
        self.core.log.close()

    async def delete(self) -> None:
        for task in self._background:
            task.cancel()
        if self._sealing is not None:
            with contextlib.suppress(Exception):
                await self._sealing
        self.core.delete()
        self._wake_fetchers()

    async def _seal(self) -> None:
        log = self.core.log
        try:
            while (segment := log.next_segment_to_seal()) is not None and not self.core.deleted:
                sealed = await asyncio.to_thread(log.write_sealed, segment)
                log.install_sealed(segment, sealed)
        finally:
            self._sealing = None

    async def _maintenance(self) -> None:
        while not self.core.deleted:
            await asyncio.sleep(self._maintenance_interval_s)
            if self.core.deleted:
                return
            try:
                await self.maintain()
            except Exception:  # keep serving; the next round retries
                logger.exception("housekeeping of partition %s failed", self.core.name)
