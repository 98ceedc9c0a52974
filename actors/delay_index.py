"""The delay scheduler's pending records, as a plain class (no Ray): what is due when.

Delayed records live in the internal schedule topic (``__delay_schedule``) with headers naming
their target topic, partition and due time. The scheduler reads that topic from the beginning
(``read_committed``) into this index and moves due records to their topic in a transaction that
also appends a *fired* marker (the schedule offsets it moved) to the schedule partition — so
after any crash, replaying the topic gives exactly the records not yet moved: no loss, no
repeat (for ``read_committed`` readers of the target topic).

The records stay in the Arrow tables they were read in (chunks); the heap holds only
``(due, schedule partition, offset, chunk, row)``. A chunk is dropped when its last pending row
fires, and chunks mostly fired are compacted, so memory follows the pending records.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

# Headers the producer adds to a delayed record (and the scheduler strips, but for the due
# time, which the delivered record keeps so readers can see how late it came).
TOPIC_HEADER = "delay.topic"
PARTITION_HEADER = "delay.partition"
DUE_HEADER = "delay.deliver.at"
FIRED_HEADER = "delay.fired"
PRIORITY_HEADER = "delay.priority"
INTERNAL_HEADERS = (TOPIC_HEADER, PARTITION_HEADER, PRIORITY_HEADER)
# A chunk is rebuilt from its pending rows when fewer than this share of its rows are pending.
COMPACT_BELOW = 0.25
COMPACT_MIN_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class Pending:
    due_ms: int
    partition: int  # of the schedule topic
    offset: int  # in the schedule partition
    chunk: int
    row: int


@dataclass(frozen=True, slots=True)
class Target:
    topic: str
    partition: int | None
    headers: list[tuple[str, bytes | None]]
    priority: int | None


def fired_ranges(offsets: Iterable[int]) -> bytes:
    """A fired marker's value: sorted offsets as ``[[first, last], ...]``."""
    ranges: list[list[int]] = []
    for offset in sorted(offsets):
        if ranges and ranges[-1][1] == offset - 1:
            ranges[-1][1] = offset
        else:
            ranges.append([offset, offset])
    return json.dumps(ranges).encode()


class DelayIndex:
    """See the module docstring."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, int, int, int]] = []
        self._chunks: dict[int, pa.Table] = {}
        self._live: dict[int, int] = {}  # chunk -> pending rows
        self._pending: set[tuple[int, int]] = set()  # (partition, offset)
        self._next_chunk = 0
        self.malformed = 0  # records with unreadable delay headers (logged and skipped)

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def memory_bytes(self) -> int:
        return sum(table.nbytes for table in self._chunks.values())

    def add(self, partition: int, table: pa.Table) -> None:
        """Records read from schedule partition ``partition``: delayed records join the index,
        fired markers take theirs out."""
        if table.num_rows == 0:
            return
        offsets = table.column("offset").to_pylist()
        headers = table.column("headers").to_pylist()
        chunk = self._next_chunk
        rows = 0
        for row, (offset, pairs) in enumerate(zip(offsets, headers, strict=True)):
            found = {h["key"]: h["value"] for h in pairs or ()}
            if FIRED_HEADER in found:
                self._fired_marker(partition, table.column("value")[row].as_py())
                continue
            try:
                due = int(found[DUE_HEADER])
                found[TOPIC_HEADER].decode()
            except (KeyError, ValueError, AttributeError, UnicodeDecodeError):
                self.malformed += 1
                continue
            if (partition, offset) in self._pending:
                continue  # read twice (a consumer reset): already pending
            heapq.heappush(self._heap, (due, partition, offset, chunk, row))
            self._pending.add((partition, offset))
            rows += 1
        if rows:
            self._chunks[chunk] = table
            self._live[chunk] = rows
            self._next_chunk += 1

    def _fired_marker(self, partition: int, value: bytes | None) -> None:
        try:
            ranges = json.loads(value or b"[]")
        except ValueError:
            self.malformed += 1
            return
        for first, last in ranges:
            for offset in range(int(first), int(last) + 1):
                self._pending.discard((partition, offset))  # the heap entry is skipped later

    def next_due(self) -> int | None:
        self._skip_fired()
        return self._heap[0][0] if self._heap else None

    def _skip_fired(self) -> None:
        heap = self._heap
        while heap and (heap[0][1], heap[0][2]) not in self._pending:
            self._release(heapq.heappop(heap)[3])

    def due(self, now_ms: int, limit: int) -> list[Pending]:
        """Up to ``limit`` records due at ``now_ms``, in due order; they leave the heap until
        ``fired`` (or ``failed`` puts them back)."""
        out = []
        while len(out) < limit:
            self._skip_fired()
            if not self._heap or self._heap[0][0] > now_ms:
                break
            out.append(Pending(*heapq.heappop(self._heap)))
        return out

    def fired(self, entries: list[Pending]) -> None:
        for entry in entries:
            self._pending.discard((entry.partition, entry.offset))
            self._release(entry.chunk)

    def failed(self, entries: list[Pending]) -> None:
        for entry in entries:
            heapq.heappush(
                self._heap, (entry.due_ms, entry.partition, entry.offset, entry.chunk, entry.row)
            )

    def _release(self, chunk: int) -> None:
        left = self._live.get(chunk, 0) - 1
        if left <= 0:
            self._live.pop(chunk, None)
            self._chunks.pop(chunk, None)
        else:
            self._live[chunk] = left

    def records(self, entries: list[Pending]) -> list[tuple[Pending, Target, dict[str, Any]]]:
        """Each entry with its target and its record (key, value, timestamp)."""
        rows: dict[tuple[int, int], dict[str, Any]] = {}
        by_chunk: dict[int, list[int]] = {}
        for entry in entries:
            by_chunk.setdefault(entry.chunk, []).append(entry.row)
        for chunk, wanted in by_chunk.items():
            taken = self._chunks[chunk].take(pa.array(wanted, pa.int64())).to_pylist()
            rows.update(((chunk, index), row) for index, row in zip(wanted, taken, strict=True))
        out = []
        for entry in entries:
            row = rows[(entry.chunk, entry.row)]
            pairs = [(h["key"], h["value"]) for h in row["headers"] or ()]
            found = dict(pairs)
            partition, priority = found.get(PARTITION_HEADER), found.get(PRIORITY_HEADER)
            target = Target(
                found[TOPIC_HEADER].decode(),
                int(partition) if partition not in (None, b"") else None,
                [(k, v) for k, v in pairs if k not in INTERNAL_HEADERS],
                int(priority) if priority not in (None, b"") else None,
            )
            out.append((entry, target, row))
        return out

    def compact(self) -> int:
        """Rebuild chunks whose rows are mostly fired; returns the rows dropped."""
        dropped = 0
        for chunk, table in list(self._chunks.items()):
            live = self._live.get(chunk, 0)
            if table.num_rows < COMPACT_MIN_ROWS or live >= table.num_rows * COMPACT_BELOW:
                continue
            entries = [e for e in self._heap if e[3] == chunk and (e[1], e[2]) in self._pending]
            rows = [e[4] for e in entries]
            new = self._next_chunk
            self._next_chunk += 1
            self._chunks[new] = table.take(pa.array(rows, pa.int64()))
            self._live[new] = len(rows)
            remap = {e: (e[0], e[1], e[2], new, i) for i, e in enumerate(entries)}
            self._heap = [remap.get(e, e) for e in self._heap if e[3] != chunk or e in remap]
            heapq.heapify(self._heap)
            del self._chunks[chunk]
            self._live.pop(chunk, None)
            dropped += table.num_rows - len(rows)
        return dropped
