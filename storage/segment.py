"""Segments: a contiguous offset range of one partition log.

A ``MemorySegment`` is the active segment (or one rolled and waiting to be sealed): its batches
live in memory for zero-copy reads and are mirrored to a write-ahead file. A ``SealedSegment`` is
a Parquet file; only its row-group index (offset and timestamp ranges) stays in memory.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ray_broker.errors import CorruptSegment
from ray_broker.storage.record_filter import RecordFilter
from ray_broker.storage.schema import FORMAT_VERSION, RECORD_SCHEMA
from ray_broker.storage.wal import WalWriter

PARQUET_SUFFIX = ".parquet"
WAL_SUFFIX = ".wal"
TMP_SUFFIX = ".tmp"
# Files that are not sealed segments start with "_", which pyarrow.dataset, Spark and Polars
# skip by default, so readers of the Hive layout see only whole Parquet segments.
HIDDEN_PREFIX = "_"
NO_TIMESTAMP = -1

# Columns whose values repeat (keys, header names, producer ids, batch timestamps). Offsets,
# sequences and values are mostly unique: a dictionary there costs ~15% of the write for nothing.
DICTIONARY_COLUMNS = [
    "timestamp",
    "key",
    "headers.list.element.key",
    "headers.list.element.value",
    "producer_id",
    "producer_epoch",
    "attributes",
]

# Row-group pruning answers kept per sealed segment (consumers of one topic share few filters).
PRUNED_FILTERS_KEPT = 8

_META_VERSION = b"ray_broker.format_version"
_META_BASE = b"ray_broker.base_offset"
_META_NEXT = b"ray_broker.next_offset"
_META_MAX_TS = b"ray_broker.max_timestamp"


def segment_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


def wal_name(base_offset: int) -> str:
    return HIDDEN_PREFIX + segment_name(base_offset, WAL_SUFFIX)


def fsync_path(path: Path) -> None:
    """Make a file's content, or a rename or unlink in a directory, durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Move a fully written ``tmp`` to ``final`` so that a crash leaves one or the other whole."""
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)


@dataclass
class ReadBudget:
    """How many records and bytes a read may still return (at least one record always fits)."""

    records: int
    bytes: int
    taken_any: bool = False

    @property
    def exhausted(self) -> bool:
        return self.records <= 0 or (self.taken_any and self.bytes <= 0)

    def rows_allowed(self, row_bytes: float, available: int) -> int:
        rows = min(self.records, available)
        if row_bytes > 0:
            by_bytes = int(self.bytes // row_bytes)
            rows = min(rows, max(by_bytes, 0 if self.taken_any else 1))
        return rows

    def take(self, rows: int, row_bytes: float) -> None:
        self.records -= rows
        self.bytes -= int(rows * row_bytes)
        self.taken_any = self.taken_any or rows > 0


@dataclass
class Scan:
    """A filtered read's answer: matching batches, the offset after the last record examined
    (or taken, when the budget ran out inside the matches) and how many were examined."""

    batches: list[pa.RecordBatch]
    next_offset: int
    examined: int
    truncated: bool = False


def _take_matches(matched: pa.Table, budget: ReadBudget, position: int, examined: int) -> Scan:
    """As many of ``matched`` as ``budget`` allows; the scan resumes after the last taken."""
    if matched.num_rows == 0:
        return Scan([], position, examined)
    row_bytes = matched.nbytes / matched.num_rows
    rows = budget.rows_allowed(row_bytes, matched.num_rows)
    budget.take(rows, row_bytes)
    if rows == matched.num_rows:
        return Scan(matched.to_batches(), position, examined)
    offsets = matched.column("offset")
    next_offset = offsets[rows - 1].as_py() + 1 if rows else offsets[0].as_py()
    return Scan(matched.slice(0, rows).to_batches(), next_offset, examined, truncated=True)


class MemorySegment:
    """The in-memory, write-ahead-logged part of a log. Offsets inside it are dense."""

    def __init__(self, directory: Path, base_offset: int, created_ms: int) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.next_offset = base_offset
        self.created_ms = created_ms
        self.max_timestamp = NO_TIMESTAMP
        self.batches: list[pa.RecordBatch] = []
        self._batch_bases: list[int] = []
        # Bytes per row of each batch (a read budget's estimate), computed once per batch.
        self._row_bytes: list[float] = []
        self.writer: WalWriter | None = None
        self.wal_bytes = 0

    @property
    def wal_path(self) -> Path:
        return self.directory / wal_name(self.base_offset)

    @property
    def num_records(self) -> int:
        return self.next_offset - self.base_offset

    @property
    def size_bytes(self) -> int:
        return self.writer.size_bytes if self.writer else self.wal_bytes

    def open_writer(self, truncate_at: int | None = None) -> WalWriter:
        self.writer = WalWriter(self.wal_path, truncate_at)
        self.wal_bytes = self.writer.size_bytes
        return self.writer

    def close_writer(self) -> None:
        if self.writer is not None:
            self.wal_bytes = self.writer.size_bytes
            self.writer.close()
            self.writer = None

    def add(self, batch: pa.RecordBatch) -> None:
        """Keep an already-logged batch in memory; its offsets must continue this segment."""
        first = batch.column("offset")[0].as_py()
        assert first == self.next_offset, f"offset {first} does not continue {self.next_offset}"
        self.batches.append(batch)
        self._batch_bases.append(first)
        self._row_bytes.append(
            batch.get_total_buffer_size() / batch.num_rows if batch.num_rows else 0.0
        )
        self.next_offset = first + batch.num_rows
        batch_max = pc.max(batch.column("timestamp")).as_py()
        self.max_timestamp = max(self.max_timestamp, batch_max)

    def read(self, offset: int, budget: ReadBudget) -> list[pa.RecordBatch]:
        out: list[pa.RecordBatch] = []
        index = bisect.bisect_right(self._batch_bases, offset) - 1
        index = max(index, 0)
        while index < len(self.batches) and not budget.exhausted:
            batch = self.batches[index]
            start = max(offset - self._batch_bases[index], 0)
            row_bytes = self._row_bytes[index]
            rows = budget.rows_allowed(row_bytes, batch.num_rows - start)
            if rows <= 0:
                break
            out.append(batch.slice(start, rows))
            budget.take(rows, row_bytes)
            index += 1
        return out

    def scan(
        self, offset: int, end: int, flt: RecordFilter, budget: ReadBudget, limit: int
    ) -> Scan:
        """Records in ``[offset, end)`` that match ``flt``, examining at most ``limit``."""
        pieces: list[pa.RecordBatch] = []
        index = max(bisect.bisect_right(self._batch_bases, offset) - 1, 0)
        position, examined = offset, 0
        while index < len(self.batches) and examined < limit and position < end:
            batch, base = self.batches[index], self._batch_bases[index]
            start = max(position - base, 0)
            rows = min(batch.num_rows - start, end - base - start, limit - examined)
            if rows > 0:
                pieces.append(batch.slice(start, rows))
                examined += rows
                position = base + start + rows
            index += 1
        if not pieces:
            return Scan([], position, 0)
        matched = flt.apply(pa.Table.from_batches(pieces, schema=RECORD_SCHEMA))
        return _take_matches(matched, budget, position, examined)

    def offset_for_time(self, timestamp: int) -> int | None:
        for base, batch in zip(self._batch_bases, self.batches, strict=True):
            hits = pc.greater_equal(batch.column("timestamp"), timestamp)
            first = pc.index(hits, True).as_py()
            if first >= 0:
                return base + first
        return None

    def to_table(self) -> pa.Table:
        return pa.Table.from_batches(self.batches, schema=RECORD_SCHEMA)


@dataclass(frozen=True)
class RowGroupIndex:
    first_offset: int
    last_offset: int
    max_timestamp: int
    num_rows: int


class SealedSegment:
    """A Parquet segment file, indexed by its row groups' offset/timestamp statistics.

    Local (``filesystem`` None, ``path`` a ``Path``) or in remote storage (``filesystem`` a
    ``pyarrow.fs.FileSystem``, ``path`` its string path; see ``storage/tiered.py``): both read
    the same way, row group by row group."""

    def __init__(
        self,
        path: Path | str,
        base_offset: int,
        next_offset: int,
        max_timestamp: int,
        size_bytes: int,
        row_groups: list[RowGroupIndex],
        filesystem: Any = None,
    ) -> None:
        self.path = path
        self.filesystem = filesystem
        self.base_offset = base_offset
        self.next_offset = next_offset
        self.max_timestamp = max_timestamp
        self.size_bytes = size_bytes
        self.row_groups = row_groups
        self._row_group_last = [rg.last_offset for rg in row_groups]
        self._file: pq.ParquetFile | None = None
        # Consumers read sequentially and a fetch often ends inside a row group: keep the last
        # decoded one so the next fetch does not decode it again.
        self._cached_row_group: tuple[int, pa.Table] | None = None
        self._pruned: dict[str, frozenset[int]] = {}

    @property
    def num_records(self) -> int:
        return sum(rg.num_rows for rg in self.row_groups)

    @property
    def remote(self) -> bool:
        return self.filesystem is not None

    @classmethod
    def load(cls, path: Path | str, filesystem: Any = None) -> SealedSegment:
        """Read a segment's footer and build its index.

        Raises:
            CorruptSegment: the file is not readable Parquet or its metadata breaks invariants.
        """
        try:
            metadata = pq.read_metadata(str(path), filesystem=filesystem)
        except (OSError, pa.ArrowException) as exc:
            raise CorruptSegment(f"sealed segment {path} is unreadable: {exc}") from None
        kv = metadata.metadata or {}
        try:
            version = int(kv[_META_VERSION])
            base = int(kv[_META_BASE])
            next_offset = int(kv[_META_NEXT])
            max_ts = int(kv[_META_MAX_TS])
        except (KeyError, ValueError):
            raise CorruptSegment(f"sealed segment {path} lacks ray_broker metadata") from None
        if version > FORMAT_VERSION:
            raise CorruptSegment(
                f"sealed segment {path} has format version {version}; this ray-broker reads "
                f"up to {FORMAT_VERSION} — upgrade ray-broker"
            )
        if posixpath.basename(str(path)) != segment_name(base, PARQUET_SUFFIX):
            raise CorruptSegment(f"sealed segment {path} states base offset {base}")
        offset_col = metadata.schema.names.index("offset")
        ts_col = metadata.schema.names.index("timestamp")
        row_groups = []
        previous_last = base - 1
        for i in range(metadata.num_row_groups):
            rg = metadata.row_group(i)
            if rg.num_rows == 0:
                continue
            offsets = rg.column(offset_col).statistics
            stamps = rg.column(ts_col).statistics
            if offsets is None or not offsets.has_min_max or stamps is None:
                raise CorruptSegment(f"sealed segment {path} lacks offset statistics")
            if offsets.min <= previous_last or offsets.max >= next_offset:
                raise CorruptSegment(
                    f"sealed segment {path}: row group {i} offsets {offsets.min}..{offsets.max} "
                    f"are out of order or outside [{base}, {next_offset})"
                )
            previous_last = offsets.max
            row_groups.append(RowGroupIndex(offsets.min, offsets.max, stamps.max, rg.num_rows))
        if filesystem is None:
            size = Path(path).stat().st_size
        else:
            size = filesystem.get_file_info(str(path)).size
        return cls(path, base, next_offset, max_ts, size, row_groups, filesystem)

    def _read_row_group(
        self, index: int, columns: list[str] | None = None, keep: bool = True
    ) -> pa.Table:
        """Row group ``index`` (only ``columns`` if given). A whole one is kept for the next
        read unless ``keep`` is False (a filtered scan passes once over each)."""
        if columns is None and self._cached_row_group and self._cached_row_group[0] == index:
            return self._cached_row_group[1]
        try:
            if self._file is None:
                self._file = pq.ParquetFile(str(self.path), filesystem=self.filesystem)
            table = self._file.read_row_group(index, columns=columns)
        except (OSError, pa.ArrowException) as exc:
            raise CorruptSegment(f"sealed segment {self.path} row group {index}: {exc}") from None
        if columns is None:
            table = table.replace_schema_metadata(RECORD_SCHEMA.metadata)
            if keep:
                table = table.combine_chunks()
                self._cached_row_group = (index, table)
        return table

    def release(self) -> None:
        """Drop the open file and the cached row group (the log reads another segment now)."""
        self._cached_row_group = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self, offset: int, budget: ReadBudget) -> list[pa.RecordBatch]:
        out: list[pa.RecordBatch] = []
        index = bisect.bisect_left(self._row_group_last, offset)
        while index < len(self.row_groups) and not budget.exhausted:
            table = self._read_row_group(index)
            # Compaction leaves gaps: find the first row at or after ``offset``.
            start = 0
            if offset > self.row_groups[index].first_offset:
                start = bisect.bisect_left(table.column("offset").to_numpy(), offset)
            rows_left = table.num_rows - start
            row_bytes = table.nbytes / table.num_rows if table.num_rows else 0.0
            rows = budget.rows_allowed(row_bytes, rows_left)
            if rows <= 0:
                break
            out.extend(table.slice(start, rows).to_batches())
            budget.take(rows, row_bytes)
            index += 1
        return out

    def scan(
        self, offset: int, end: int, flt: RecordFilter, budget: ReadBudget, limit: int
    ) -> Scan:
        """Records in ``[offset, end)`` that match ``flt``, examining at most ``limit``.

        The filter is pushed into the Parquet read: row groups whose statistics rule it out
        are skipped unread, the others are first decoded only in the columns the filter reads
        (``flt.columns``), and the whole row group only when something in it matches."""
        candidates = self._row_groups_matching(flt)
        index = bisect.bisect_left(self._row_group_last, offset)
        found: list[pa.RecordBatch] = []
        position, examined = offset, 0
        hit_last = False
        while (
            index < len(self.row_groups)
            and examined < limit
            and position < end
            and not budget.exhausted
        ):
            group = self.row_groups[index]
            if group.first_offset >= end:
                break
            if candidates is not None and index not in candidates:
                position = min(group.last_offset + 1, end)
                index += 1
                continue
            # Matches in the last group suggest matches in this one: then decode it whole
            # once; otherwise only the filter's columns first (most groups have none).
            whole = self._read_row_group(index, keep=False) if hit_last else None
            part = whole if whole is not None else self._read_row_group(index, flt.columns)
            offsets = part.column("offset").to_numpy()
            low = int(np.searchsorted(offsets, position))
            high = min(int(np.searchsorted(offsets, end)), low + limit - examined)
            hits = flt.mask(part.slice(low, high - low)) + low
            examined += high - low
            hit_last = len(hits) > 0
            # Past the rows examined; past the whole group (and any compaction gap) when done.
            done = high == len(offsets)
            position = min(group.last_offset + 1, end) if done else int(offsets[high])
            if len(hits):
                if whole is None:
                    whole = self._read_row_group(index, keep=False)
                matched = whole.take(pa.array(hits))
                taken = _take_matches(matched, budget, position, examined)
                found.extend(taken.batches)
                if taken.truncated:  # the budget ran out inside the matches
                    return Scan(found, taken.next_offset, examined, truncated=True)
            if not done:
                break
            index += 1
        return Scan(found, position, examined)

    def _row_groups_matching(self, flt: RecordFilter) -> frozenset[int] | None:
        """Row groups whose statistics do not rule ``flt`` out, or None for all (a filter on
        headers, which have no statistics of their own)."""
        if not flt.prunes_row_groups:
            return None
        cached = self._pruned.get(flt.text)
        if cached is not None:
            return cached
        # Imported here: pyarrow.dataset imports pandas (~0.5 s), which every partition actor
        # would otherwise pay at start-up, filters or not.
        import pyarrow.dataset as ds

        try:
            fragment = ds.ParquetFileFormat().make_fragment(
                str(self.path), filesystem=self.filesystem or pafs.LocalFileSystem()
            )
            kept = frozenset(rg.id for rg in fragment.subset(filter=flt.expression).row_groups)
        except (OSError, pa.ArrowException) as exc:
            raise CorruptSegment(f"sealed segment {self.path}: {exc}") from None
        if len(self._pruned) >= PRUNED_FILTERS_KEPT:
            self._pruned.pop(next(iter(self._pruned)))
        self._pruned[flt.text] = kept
        return kept

    def offset_for_time(self, timestamp: int) -> int | None:
        for index, rg in enumerate(self.row_groups):
            if rg.max_timestamp < timestamp:
                continue
            table = self._read_row_group(index, columns=["offset", "timestamp"])
            first = pc.index(pc.greater_equal(table.column("timestamp"), timestamp), True)
            if first.as_py() >= 0:
                return table.column("offset")[first.as_py()].as_py()
        return None

    def to_table(self) -> pa.Table:
        try:
            table = pq.read_table(str(self.path), filesystem=self.filesystem)
        except (OSError, pa.ArrowException) as exc:
            raise CorruptSegment(f"sealed segment {self.path} is unreadable: {exc}") from None
        return table.replace_schema_metadata(RECORD_SCHEMA.metadata)

    def delete(self) -> None:
        self.release()
        if self.filesystem is None:
            Path(self.path).unlink(missing_ok=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.filesystem.delete_file(str(self.path))


def write_sealed(
    directory: Path,
    table: pa.Table,
    base_offset: int,
    next_offset: int,
    *,
    compression: str,
    row_group_records: int,
) -> SealedSegment:
    """Write ``table`` as the segment ``[base_offset, next_offset)`` and rename it into place.

    The file is fsynced before the rename and the directory after it, so once this returns
    the segment survives a machine crash and its write-ahead file may be deleted. Pure with
    respect to the log: safe to run on a worker thread while the log keeps appending.
    """
    max_ts = pc.max(table.column("timestamp")).as_py() if table.num_rows else NO_TIMESTAMP
    metadata = dict(RECORD_SCHEMA.metadata)
    metadata.update(
        {
            _META_BASE: str(base_offset).encode(),
            _META_NEXT: str(next_offset).encode(),
            _META_MAX_TS: str(max_ts).encode(),
        }
    )
    table = table.replace_schema_metadata(metadata)
    final = directory / segment_name(base_offset, PARQUET_SUFFIX)
    tmp = final.with_name(HIDDEN_PREFIX + final.name + TMP_SUFFIX)
    pq.write_table(
        table,
        tmp,
        compression=None if compression == "none" else compression,
        row_group_size=row_group_records,
        write_statistics=["offset", "timestamp"],
        use_dictionary=DICTIONARY_COLUMNS,
    )
    publish(tmp, final)
    return SealedSegment.load(final)
