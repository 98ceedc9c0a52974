"""The consumer: pulls Arrow slices from partition actors, one long-poll fetch in flight each.

Each assigned partition keeps one fetch outstanding (a long poll that the partition answers as
soon as data arrives) and at most one fetched slice buffered, so the next slice is on its way
while the application handles this one. ``poll_arrow()`` hands out those slices without building
a Python object per record; ``poll()`` builds ``Record`` objects only for what it returns.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from ray_broker._remote import resolve, unwrap
from ray_broker.config import ConsumerConfig, client_config
from ray_broker.errors import (
    BrokerError,
    ConsumerClosed,
    InvalidConfig,
    OffsetOutOfRange,
    UnknownTopicOrPartition,
)
from ray_broker.metadata import MetadataCache
from ray_broker.structs import (
    FetchResponse,
    OffsetAndTimestamp,
    PartitionOffsets,
    Record,
    TopicPartition,
)

USER_COLUMNS = ["offset", "timestamp", "key", "value", "headers"]
CLOSE_TIMEOUT_S = 2.0


@dataclass
class _PartitionFetch:
    """Fetch state of one assigned partition."""

    position: int | None = None  # next offset handed to the application
    fetch_offset: int | None = None  # next offset to ask the partition for
    in_flight: Any = None  # ObjectRef of the outstanding fetch
    buffer: pa.Table | None = None  # fetched, not yet handed out
    backoff_until: float = 0.0
    high_watermark: int = -1


class Consumer:
    """Reads records from assigned partitions. Not thread-safe, like kafka-python's."""

    def __init__(self, metadata: MetadataCache, topics: Sequence[str] = (), **options: Any) -> None:
        self.config: ConsumerConfig = client_config(ConsumerConfig, options)
        if self.config.group_id is not None:
            raise InvalidConfig(
                "group_id: consumer groups are not available in this version; consume without "
                "group_id (all partitions) or assign() partitions explicitly"
            )
        self._metadata = metadata
        self._fetches: dict[TopicPartition, _PartitionFetch] = {}
        self._next_partition = 0
        self._abandoned: list[Any] = []
        self._closed = False
        if topics:
            self.subscribe(topics)

    # --- assignment -----------------------------------------------------------------------------

    def subscribe(self, topics: Sequence[str] | str) -> None:
        """Read every partition of ``topics`` (no group: nothing is shared or committed).

        Raises:
            TopicNotFound: a topic does not exist.
        """
        names = [topics] if isinstance(topics, str) else list(topics)
        partitions = [
            TopicPartition(name, p)
            for name in names
            for p in range(self._metadata.topic(name).num_partitions)
        ]
        self.assign(partitions)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Read exactly these partitions from now on.

        Raises:
            UnknownTopicOrPartition: a partition does not exist.
        """
        self._check_open()
        wanted = [TopicPartition(*tp) for tp in partitions]
        for tp in wanted:
            if not 0 <= tp.partition < self._metadata.topic(tp.topic).num_partitions:
                raise UnknownTopicOrPartition(f"{tp.topic}-{tp.partition} does not exist")
        for tp, state in self._fetches.items():
            if tp not in wanted:
                self._abandon(state)
        self._fetches = {tp: self._fetches.get(tp, _PartitionFetch()) for tp in wanted}

    def assignment(self) -> set[TopicPartition]:
        return set(self._fetches)

    def unsubscribe(self) -> None:
        self.assign([])

    # --- positions ------------------------------------------------------------------------------

    def _state(self, tp: TopicPartition) -> _PartitionFetch:
        try:
            return self._fetches[TopicPartition(*tp)]
        except KeyError:
            raise UnknownTopicOrPartition(f"{tp} is not assigned to this consumer") from None

    def _leader(self, tp: TopicPartition) -> Any:
        return self._metadata.topic(tp.topic).leaders[tp.partition]

    def _offsets(self, tp: TopicPartition) -> PartitionOffsets:
        return resolve(self._leader(tp).offsets.remote(), self.config.request_timeout_ms / 1000)

    def _move(self, tp: TopicPartition, offset: int) -> None:
        state = self._state(tp)
        state.position = state.fetch_offset = offset
        state.buffer = None
        self._abandon(state)

    def _abandon(self, state: _PartitionFetch) -> None:
        """Drop an outstanding fetch; its reply (or error) is collected and ignored later.

        Ray reports errors of results nobody ever reads, so none is left unread.
        """
        if state.in_flight is not None:
            self._abandoned.append(state.in_flight)
            state.in_flight = None

    def _reap_abandoned(self, timeout_s: float = 0) -> None:
        if not self._abandoned:
            return
        done, self._abandoned = ray.wait(
            self._abandoned, num_returns=len(self._abandoned), timeout=timeout_s
        )
        for ref in done:
            with contextlib.suppress(Exception):
                ray.get(ref)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset`` next.

        Raises:
            OffsetOutOfRange: ``offset`` is below the log start or beyond the log end.
        """
        offsets = self._offsets(tp)
        if not offsets.log_start_offset <= offset <= offsets.high_watermark:
            raise OffsetOutOfRange(
                f"cannot seek {tp.topic}-{tp.partition} to {offset}: valid offsets are "
                f"[{offsets.log_start_offset}, {offsets.high_watermark}]"
            )
        self._move(tp, offset)

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions or tuple(self._fetches):
            self._move(tp, self._offsets(tp).log_start_offset)

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        for tp in partitions or tuple(self._fetches):
            self._move(tp, self._offsets(tp).high_watermark)

    def position(self, tp: TopicPartition) -> int:
        """The offset of the next record ``poll`` returns for ``tp``."""
        state = self._state(tp)
        if state.position is None:
            self._reset(tp)
        assert state.position is not None
        return state.position

    def _reset(self, tp: TopicPartition, cause: BrokerError | None = None) -> None:
        policy = self.config.auto_offset_reset
        if policy == "none":
            raise cause or OffsetOutOfRange(
                f"{tp.topic}-{tp.partition} has no position and auto_offset_reset='none'"
            )
        offsets = self._offsets(tp)
        self._move(tp, offsets.log_start_offset if policy == "earliest" else offsets.high_watermark)

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {TopicPartition(*tp): self._offsets(tp).log_start_offset for tp in partitions}

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {TopicPartition(*tp): self._offsets(tp).high_watermark for tp in partitions}

    def offsets_for_times(
        self, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """The earliest offset per partition whose timestamp is >= the given ms timestamp."""
        refs = {
            TopicPartition(*tp): self._leader(tp).offset_for_time.remote(ts)
            for tp, ts in timestamps.items()
        }
        found = resolve(list(refs.values()), self.config.request_timeout_ms / 1000)
        return {
            tp: None if hit is None else OffsetAndTimestamp(*hit)
            for tp, hit in zip(refs, found, strict=True)
        }

    # --- fetching -------------------------------------------------------------------------------

    def poll(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        """Records per partition, waiting up to ``timeout_ms`` for the first one.

        Raises:
            OffsetOutOfRange: a position fell out of the log and auto_offset_reset='none'.
            ConsumerClosed: the consumer was closed.
        """
        slices = self._poll_slices(timeout_ms, max_records or self.config.max_poll_records)
        return {tp: self._records(tp, table) for tp, table in slices}

    def poll_arrow(self, timeout_ms: int = 0, max_records: int = 100_000) -> pa.Table:
        """Records as one Arrow table with ``topic`` and ``partition`` columns; no per-record
        Python objects. Empty (with the same columns) if nothing arrived in ``timeout_ms``."""
        slices = self._poll_slices(timeout_ms, max_records)
        tables = []
        for tp, table in slices:
            n = table.num_rows
            topic = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), [tp.topic])
            tables.append(
                table.select(USER_COLUMNS)
                .add_column(0, "partition", pa.array(np.full(n, tp.partition, np.int32)))
                .add_column(0, "topic", topic)
            )
        if not tables:
            return _empty_arrow()
        return pa.concat_tables(tables, promote_options="permissive")

    def __iter__(self) -> Iterator[Record]:
        timeout_ms = self.config.consumer_timeout_ms
        while True:
            batch = self.poll(timeout_ms=timeout_ms if timeout_ms >= 0 else 1_000)
            if not batch and timeout_ms >= 0:
                return
            for records in batch.values():
                yield from records

    def _poll_slices(
        self, timeout_ms: int, max_records: int
    ) -> list[tuple[TopicPartition, pa.Table]]:
        self._check_open()
        self._reap_abandoned()
        deadline = time.monotonic() + max(timeout_ms, 0) / 1000
        while True:
            self._send_fetches()
            slices = self._drain(max_records)
            remaining = deadline - time.monotonic()
            if slices or remaining <= 0:
                return slices
            self._await_fetches(remaining)

    def _send_fetches(self) -> None:
        now = time.monotonic()
        for tp, state in self._fetches.items():
            if state.in_flight is not None or state.buffer is not None or now < state.backoff_until:
                continue
            if state.position is None:
                self._reset(tp)
            try:
                state.in_flight = self._leader(tp).fetch.remote(
                    state.fetch_offset,
                    self.config.max_partition_fetch_records,
                    self.config.max_partition_fetch_bytes,
                    self.config.fetch_max_wait_ms,
                )
            except BrokerError as exc:
                if not exc.retriable:
                    raise
                state.backoff_until = now + self.config.retry_backoff_ms / 1000

    def _await_fetches(self, timeout_s: float) -> None:
        pending = {s.in_flight: tp for tp, s in self._fetches.items() if s.in_flight is not None}
        if not pending:
            time.sleep(min(timeout_s, self.config.retry_backoff_ms / 1000))
            return
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout_s)
        if ready:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
        for ref in ready:
            self._complete_fetch(pending[ref], ref)

    def _complete_fetch(self, tp: TopicPartition, ref: Any) -> None:
        state = self._fetches.get(tp)
        if state is None or state.in_flight is not ref:
            return  # seeked or unassigned meanwhile
        state.in_flight = None
        try:
            response: FetchResponse = ray.get(ref)
        except Exception as exc:  # Ray's own types: unwrap() maps them to BrokerError
            error = unwrap(exc)
            if isinstance(error, OffsetOutOfRange):
                self._reset(tp, error)
            elif error.retriable:
                state.backoff_until = time.monotonic() + self.config.retry_backoff_ms / 1000
                self._metadata.forget(tp.topic)
            else:
                raise error from None
            return
        state.high_watermark = response.high_watermark
        if response.num_records:
            table = pa.ipc.open_stream(response.records_ipc).read_all()
            state.buffer = table
            state.fetch_offset = table.column("offset")[-1].as_py() + 1

    def _drain(self, max_records: int) -> list[tuple[TopicPartition, pa.Table]]:
        out: list[tuple[TopicPartition, pa.Table]] = []
        partitions = list(self._fetches.items())
        if not partitions:
            return out
        start = self._next_partition % len(partitions)
        self._next_partition += 1
        for tp, state in partitions[start:] + partitions[:start]:
            if max_records <= 0:
                break
            if state.buffer is None:
                continue
            taken = state.buffer.slice(0, max_records)
            rest = state.buffer.num_rows - taken.num_rows
            state.buffer = state.buffer.slice(taken.num_rows) if rest else None
            state.position = taken.column("offset")[-1].as_py() + 1
            max_records -= taken.num_rows
            out.append((tp, taken))
        return out

    def _records(self, tp: TopicPartition, table: pa.Table) -> list[Record]:
        keys = table.column("key").to_pylist()
        values = table.column("value").to_pylist()
        decode_key, decode_value = self.config.key_deserializer, self.config.value_deserializer
        if decode_key is not None:
            keys = [None if k is None else decode_key(k) for k in keys]
        if decode_value is not None:
            values = [None if v is None else decode_value(v) for v in values]
        headers = table.column("headers")
        header_lists = (
            [[(h["key"], h["value"]) for h in hs] if hs else [] for hs in headers.to_pylist()]
            if headers.null_count < len(headers)
            else [[] for _ in range(table.num_rows)]
        )
        return [
            Record(tp.topic, tp.partition, offset, timestamp, key, value, hdrs)
            for offset, timestamp, key, value, hdrs in zip(
                table.column("offset").to_pylist(),
                table.column("timestamp").to_pylist(),
                keys,
                values,
                header_lists,
                strict=True,
            )
        ]

    # --- lifecycle ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConsumerClosed("this consumer was closed")

    def close(self) -> None:
        """Stop fetching; outstanding long polls are cancelled."""
        if self._closed:
            return
        for state in self._fetches.values():
            if state.in_flight is not None:
                ray.cancel(state.in_flight)
            self._abandon(state)
        self._fetches = {}
        self._reap_abandoned(timeout_s=CLOSE_TIMEOUT_S)
        self._closed = True

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _empty_arrow() -> pa.Table:
    from ray_broker.storage.schema import RECORD_SCHEMA

    fields = [RECORD_SCHEMA.field(name) for name in USER_COLUMNS]
    schema = pa.schema(
        [
            pa.field("topic", pa.dictionary(pa.int32(), pa.string())),
            pa.field("partition", pa.int32()),
        ]
        + fields
    )
    return schema.empty_table()
