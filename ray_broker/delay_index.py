"""The delay scheduler's pending records, as a plain class (no Ray): what is due when.

Delayed records live in the internal schedule topic (``__delay_schedule``) with headers naming
their target topic, partition and due time. The scheduler reads that topic from the beginning
(``read_committed``) into this index and moves due records to their topic in a transaction that
also appends a *fired* marker (the schedule offsets it moved) to the schedule partition — so
after any crash, replaying the topic gives exactly the records not yet moved: no loss, no
repeat (for ``read_committed`` readers of the target topic).

Columnar throughout: each table read becomes a chunk sorted by due time, its headers decoded
with Arrow kernels into NumPy columns (due, target partition, target topic); a heap orders the
chunks by their next due row, and a round takes every due row of every due chunk, sorted by
(due, schedule partition, offset). A chunk is dropped once all its rows have fired, and
compacted when most have, so memory follows the pending records (about the records' own bytes
plus 24 bytes a row).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_broker.config import DELAY_TARGET_HEADER
from ray_broker.storage.record_filter import header_column

# Headers the producer adds to a delayed record; the delivered record keeps them (the due
# time shows how late it came).
TOPIC_HEADER = DELAY_TARGET_HEADER
PARTITION_HEADER = "delay.partition"
DUE_HEADER = "delay.deliver.at"
PRIORITY_HEADER = "delay.priority"
TRACE_HEADER = "delay.trace"  # sent with trace=True: traced again when it reaches its topic
FIRED_HEADER = "delay.fired"
# A chunk is rebuilt from its pending rows when more than this share of it has fired.
COMPACT_ABOVE = 0.5
COMPACT_MIN_ROWS = 10_000


def fired_ranges(offsets: Iterable[int]) -> bytes:
    """A fired marker's value: sorted offsets as ``[[first, last], ...]``."""
    ranges: list[list[int]] = []
    for offset in sorted(offsets):
        if ranges and ranges[-1][1] == offset - 1:
            ranges[-1][1] = offset
        else:
            ranges.append([offset, offset])
    return json.dumps(ranges).encode()


def _header_column(headers: pa.Array, name: str, n: int) -> pa.Array:
    """Each row's value of header ``name`` (null where absent)."""
    assert len(headers) == n
    return header_column(headers, name)


def _as_int(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values, valid) of a column of decimal digits as bytes."""
    text = pc.cast(column, pa.string())
    digits = pc.fill_null(pc.match_substring_regex(text, r"^-?[0-9]{1,18}$"), False)
    numbers = pc.cast(pc.if_else(digits, text, pa.scalar("0")), pa.int64())
    return numbers.to_numpy(zero_copy_only=False), digits.to_numpy(zero_copy_only=False)


@dataclass
class Chunk:
    """Pending rows of one read of one schedule partition, sorted by due time."""

    partition: int
    table: pa.Table  # key, value, headers
    offsets: np.ndarray
    due: np.ndarray
    topics: np.ndarray  # index into DelayIndex.topic_names
    targets: np.ndarray  # target partition, -1: none given
    priorities: np.ndarray  # -1: none given
    traced: np.ndarray  # sent with trace=True
    alive: np.ndarray = field(init=False)
    cursor: int = 0  # rows before it are fired or in flight

    def __post_init__(self) -> None:
        self.alive = np.ones(len(self.due), dtype=bool)

    def next_due(self) -> int | None:
        while self.cursor < len(self.due) and not self.alive[self.cursor]:
            self.cursor += 1
        return int(self.due[self.cursor]) if self.cursor < len(self.due) else None


@dataclass
class Round:
    """Rows handed out by ``DelayIndex.due``: per chunk how many (from its cursor), and the
    global order (due, schedule partition, offset)."""

    taken: dict[int, np.ndarray]  # chunk id -> row indices
    order: list[tuple[int, int]]  # (chunk id, row) in firing order

    def __len__(self) -> int:
        return len(self.order)


class DelayIndex:
    """See the module docstring."""

    def __init__(self) -> None:
        self.chunks: dict[int, Chunk] = {}
        self.topic_names: list[str] = []
        self._topic_ids: dict[str, int] = {}
        self._heap: list[tuple[int, int]] = []  # (next due, chunk id), checked when popped
        self._next_chunk = 0
        self._pending = 0
        self.malformed = 0  # records with unreadable delay headers (skipped)

    def __len__(self) -> int:
        return self._pending

    @property
    def memory_bytes(self) -> int:
        return sum(c.table.nbytes + c.due.nbytes * 4 for c in self.chunks.values())

    # --- reading the schedule topic -------------------------------------------------------------

    def add(self, partition: int, table: pa.Table) -> None:
        """Records read from schedule partition ``partition``: delayed records join the index,
        fired markers take theirs out."""
        n = table.num_rows
        if n == 0:
            return
        headers = table.column("headers").combine_chunks()
        fired = _header_column(headers, FIRED_HEADER, n).is_valid().to_numpy(zero_copy_only=False)
        try:
            self._add_delayed(partition, table, headers, fired)
        finally:  # after: a marker may name records of this same read
            for row in np.flatnonzero(fired):
                self._fired_marker(partition, table.column("value")[int(row)].as_py())

    def _add_delayed(
        self, partition: int, table: pa.Table, headers: pa.Array, fired: np.ndarray
    ) -> None:
        n = table.num_rows
        due, due_ok = _as_int(_header_column(headers, DUE_HEADER, n))
        topic_column = _header_column(headers, TOPIC_HEADER, n)
        target, target_ok = _as_int(_header_column(headers, PARTITION_HEADER, n))
        priority, priority_ok = _as_int(_header_column(headers, PRIORITY_HEADER, n))
        valid = due_ok & topic_column.is_valid().to_numpy(zero_copy_only=False) & ~fired
        self.malformed += int(n - fired.sum() - valid.sum())
        rows = np.flatnonzero(valid)
        if len(rows) == 0:
            return
        rows = rows[np.argsort(due[rows], kind="stable")]
        names = pc.cast(pc.take(topic_column, pa.array(rows)), pa.string()).to_pylist()
        chunk = Chunk(
            partition,
            table.select(["key", "value", "headers"]).take(pa.array(rows)),
            table.column("offset").to_numpy()[rows],
            due[rows],
            np.array([self._topic_id(name) for name in names], dtype=np.int32),
            np.where(target_ok[rows], target[rows], -1),
            np.where(priority_ok[rows], priority[rows], -1),
            _header_column(headers, TRACE_HEADER, n)
            .is_valid()
            .to_numpy(zero_copy_only=False)[rows],
        )
        chunk_id = self._next_chunk
        self._next_chunk += 1
        self.chunks[chunk_id] = chunk
        self._pending += len(rows)
        heapq.heappush(self._heap, (int(chunk.due[0]), chunk_id))

    def _topic_id(self, name: str) -> int:
        found = self._topic_ids.get(name)
        if found is None:
            found = self._topic_ids[name] = len(self.topic_names)
            self.topic_names.append(name)
        return found

    def _fired_marker(self, partition: int, value: bytes | None) -> None:
        try:
            ranges = json.loads(value or b"[]")
            offsets = np.concatenate(
                [np.arange(int(a), int(b) + 1, dtype=np.int64) for a, b in ranges] or [[]]
            )
        except (ValueError, TypeError):
            self.malformed += 1
            return
        for chunk in self.chunks.values():
            if chunk.partition != partition:
                continue
            hit = np.isin(chunk.offsets, offsets) & chunk.alive
            hit[: chunk.cursor] = False  # in flight or fired: counted when they end
            self._pending -= int(hit.sum())
            chunk.alive[hit] = False

    # --- firing ---------------------------------------------------------------------------------

    def next_due(self) -> int | None:
        while self._heap:
            due, chunk_id = self._heap[0]
            chunk = self.chunks.get(chunk_id)
            current = None if chunk is None else chunk.next_due()
            if current == due:
                return due
            heapq.heappop(self._heap)  # stale: re-push with its current next due
            if current is not None:
                heapq.heappush(self._heap, (current, chunk_id))
        return None

    def due(self, now_ms: int, limit: int) -> Round:
        """Up to ``limit`` rows due at ``now_ms`` in firing order; they are in flight until
        ``fired`` (or ``failed`` hands them back)."""
        candidates: list[tuple[int, np.ndarray]] = []
        while (next_due := self.next_due()) is not None and next_due <= now_ms:
            _, chunk_id = heapq.heappop(self._heap)
            chunk = self.chunks[chunk_id]
            end = int(np.searchsorted(chunk.due, now_ms, side="right"))
            end = min(end, chunk.cursor + limit)
            rows = chunk.cursor + np.flatnonzero(chunk.alive[chunk.cursor : end])
            candidates.append((chunk_id, rows))
        if not candidates:
            return Round({}, [])
        chunk_ids = np.concatenate([np.full(len(rows), c) for c, rows in candidates])
        rows_all = np.concatenate([rows for _, rows in candidates])
        dues = np.concatenate([self.chunks[c].due[rows] for c, rows in candidates])
        parts = np.concatenate(
            [np.full(len(rows), self.chunks[c].partition) for c, rows in candidates]
        )
        offsets = np.concatenate([self.chunks[c].offsets[rows] for c, rows in candidates])
        order = np.lexsort((offsets, parts, dues))[:limit]  # due, then partition, then offset
        kept_chunks, kept_rows = chunk_ids[order], rows_all[order]
        taken: dict[int, np.ndarray] = {}
        for chunk_id, _ in candidates:
            mine = np.sort(kept_rows[kept_chunks == chunk_id])
            chunk = self.chunks[chunk_id]
            # Kept rows are a prefix of the chunk's due rows (same order): the cursor passes
            # them; the chunk goes back on the heap at its next due row.
            if len(mine):
                taken[chunk_id] = mine
                chunk.cursor = int(mine[-1]) + 1
            nxt = chunk.next_due()
            if nxt is not None:
                heapq.heappush(self._heap, (nxt, chunk_id))
        return Round(taken, list(zip(kept_chunks.tolist(), kept_rows.tolist(), strict=True)))

    def fired(self, done: Round) -> None:
        for chunk_id, rows in done.taken.items():
            chunk = self.chunks[chunk_id]
            chunk.alive[rows] = False
            self._pending -= len(rows)
            if chunk.next_due() is None:
                del self.chunks[chunk_id]
            elif chunk.cursor > len(chunk.due) * COMPACT_ABOVE >= COMPACT_MIN_ROWS / 2:
                self._compact(chunk)

    def failed(self, done: Round) -> None:
        for chunk_id, rows in done.taken.items():
            chunk = self.chunks[chunk_id]
            chunk.cursor = min(chunk.cursor, int(rows.min()))
            heapq.heappush(self._heap, (int(chunk.due[chunk.cursor]), chunk_id))

    def _compact(self, chunk: Chunk) -> None:
        keep = np.arange(chunk.cursor, len(chunk.due))
        index = pa.array(keep)
        chunk.table = chunk.table.take(index)
        for name in ("offsets", "due", "topics", "targets", "priorities", "traced", "alive"):
            setattr(chunk, name, getattr(chunk, name)[keep])
        chunk.cursor = 0

    def tables(self, done: Round) -> dict[str, pa.Table]:
        """The round's records per target topic, in firing order, as ``send_batch`` tables:
        key, value, headers, partition (and priority, trace where given)."""
        base, pieces, start = {}, [], 0
        for chunk_id, rows in done.taken.items():
            base[chunk_id] = {int(r): start + i for i, r in enumerate(rows)}
            pieces.append(self.chunks[chunk_id].table.take(pa.array(rows)))
            start += len(rows)
        everything = pa.concat_tables(pieces)
        by_topic: dict[int, list[tuple[int, int]]] = {}
        for chunk_id, row in done.order:
            topic = int(self.chunks[chunk_id].topics[row])
            by_topic.setdefault(topic, []).append((chunk_id, row))
        out = {}
        for topic_id, rows in by_topic.items():
            index = pa.array([base[c][r] for c, r in rows], pa.int64())
            table = everything.take(index)
            targets = [int(self.chunks[c].targets[r]) for c, r in rows]
            table = table.append_column("partition", pa.array(targets, pa.int32()))
            priorities = [int(self.chunks[c].priorities[r]) for c, r in rows]
            if max(priorities) >= 0:
                table = table.append_column(
                    "priority", pa.array([max(p, 0) for p in priorities], pa.int8())
                )
            traced = [bool(self.chunks[c].traced[r]) for c, r in rows]
            if any(traced):
                table = table.append_column("trace", pa.array(traced, pa.bool_()))
            out[self.topic_names[topic_id]] = table
        return out

    def offsets_by_partition(self, done: Round) -> dict[int, list[int]]:
        """The schedule offsets of a round, per schedule partition (the fired markers)."""
        out: dict[int, list[int]] = {}
        for chunk_id, rows in done.taken.items():
            chunk = self.chunks[chunk_id]
            out.setdefault(chunk.partition, []).extend(chunk.offsets[rows].tolist())
        return out

    def lateness(self, done: Round, now_ms: int) -> list[int]:
        return [now_ms - int(self.chunks[c].due[r]) for c, r in done.order]
