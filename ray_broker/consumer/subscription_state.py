"""Which partitions a consumer reads and where it stands in each: a plain class, no Ray.

Per partition it keeps the position (the next offset handed to the application), the fetch
offset (the next one asked of the partition, ahead of the position by what is buffered), the one
fetch in flight and the one fetched slice not yet handed out. ``drain()`` hands slices out
round-robin so no partition starves another; a seek drops what was buffered or in flight.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ray_broker.errors import UnknownTopicOrPartition
from ray_broker.structs import TopicPartition


@dataclass
class PartitionState:
    """Fetch state of one assigned partition."""

    position: int | None = None  # next offset handed to the application; None: reset needed
    fetch_offset: int | None = None  # next offset to ask the partition for
    in_flight: Any = None  # the outstanding fetch (an ObjectRef, opaque here)
    sent_at: float = 0.0
    buffer: pa.Table | None = None  # fetched, not yet handed out
    backoff_until: float = 0.0
    high_watermark: int = -1
    # Where the buffered records' fetch ended (hidden control or aborted records after the
    # last one buffered count): the position once the buffer is handed out.
    buffer_end: int | None = None


class SubscriptionState:
    """See the module docstring. Methods that drop a fetch in flight return it, so the caller
    (which owns the I/O) can collect its answer."""

    def __init__(self) -> None:
        self.partitions: dict[TopicPartition, PartitionState] = {}
        self._next_partition = 0

    def assign(self, wanted: Iterable[TopicPartition]) -> list[Any]:
        """Read exactly ``wanted``; positions of partitions kept stay."""
        wanted = [TopicPartition(*tp) for tp in wanted]
        dropped = [
            s.in_flight
            for tp, s in self.partitions.items()
            if tp not in wanted and s.in_flight is not None
        ]
        self.partitions = {tp: self.partitions.get(tp) or PartitionState() for tp in wanted}
        return dropped

    def add(self, tp: TopicPartition) -> None:
        self.partitions.setdefault(tp, PartitionState())

    def remove(self, tp: TopicPartition) -> Any:
        state = self.partitions.pop(tp, None)
        return None if state is None else state.in_flight

    def state(self, tp: TopicPartition) -> PartitionState:
        try:
            return self.partitions[TopicPartition(*tp)]
        except KeyError:
            raise UnknownTopicOrPartition(
                f"{tp} is not assigned to this consumer", topic=tp[0], partition=tp[1]
            ) from None

    def move(self, tp: TopicPartition, offset: int) -> Any:
        """Read ``tp`` from ``offset`` next; returns the fetch in flight it drops."""
        state = self.state(tp)
        state.position = state.fetch_offset = offset
        state.buffer = state.buffer_end = None
        dropped, state.in_flight = state.in_flight, None
        return dropped

    def fetch_sent(self, tp: TopicPartition, ref: Any, now: float) -> None:
        state = self.partitions[tp]
        state.in_flight, state.sent_at = ref, now

    def fetch_failed(self, tp: TopicPartition, backoff_until: float) -> None:
        state = self.partitions[tp]
        state.in_flight, state.backoff_until = None, backoff_until

    def fetched(
        self,
        tp: TopicPartition,
        ref: Any,
        table: pa.Table | None,
        high: int,
        next_offset: int = -1,
    ) -> bool:
        """A fetch's answer: buffered if it is still the partition's current fetch (a seek or
        an unassignment since makes it stale); returns whether it was taken. ``next_offset``
        (the partition's, past records it hid) moves the fetch, and the position once the
        buffer is drained, past hidden records."""
        state = self.partitions.get(tp)
        if state is None or state.in_flight is not ref:
            return False
        state.in_flight = None
        state.high_watermark = high
        if table is not None and table.num_rows:
            state.buffer = (
                table if state.buffer is None else pa.concat_tables([state.buffer, table])
            )
            state.fetch_offset = table.column("offset")[-1].as_py() + 1
        if state.fetch_offset is not None and next_offset > state.fetch_offset:
            state.fetch_offset = next_offset
        if state.buffer is None:
            if state.position is not None and next_offset > state.position:
                state.position = next_offset  # only hidden records: move past them
        else:
            state.buffer_end = state.fetch_offset
        return True

    def is_current(self, tp: TopicPartition, ref: Any) -> bool:
        state = self.partitions.get(tp)
        return state is not None and state.in_flight is ref

    def to_fetch(self, now: float) -> list[TopicPartition]:
        """Partitions that need a fetch sent: none in flight, nothing buffered, no back-off."""
        return [
            tp
            for tp, s in self.partitions.items()
            if s.in_flight is None and s.buffer is None and now >= s.backoff_until
        ]

    def hung(self, now: float, patience_s: float) -> list[tuple[TopicPartition, Any]]:
        """Fetches in flight for longer than ``patience_s`` (a hung leader), dropped."""
        out = []
        for tp, state in self.partitions.items():
            if state.in_flight is not None and now - state.sent_at > patience_s:
                out.append((tp, state.in_flight))
                state.in_flight = None
        return out

    def in_flight(self) -> dict[Any, TopicPartition]:
        return {s.in_flight: tp for tp, s in self.partitions.items() if s.in_flight is not None}

    def drain(self, max_records: int) -> list[tuple[TopicPartition, pa.Table]]:
        """Up to ``max_records`` buffered records, partitions taken round-robin; positions
        advance past exactly what is handed out."""
        out: list[tuple[TopicPartition, pa.Table]] = []
        partitions = list(self.partitions.items())
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
            if not rest and state.buffer_end is not None:
                state.position = max(state.position, state.buffer_end)
                state.buffer_end = None
            max_records -= taken.num_rows
            out.append((tp, taken))
        return out

    def positions(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Positions known for ``partitions`` (those never read have none to commit)."""
        return {
            tp: state.position
            for tp in partitions
            if (state := self.partitions.get(tp)) is not None and state.position is not None
        }

    def assigned(self) -> set[TopicPartition]:
        return set(self.partitions)
