"""A partition's log: dense offsets over sealed Parquet segments and in-memory WAL segments.

The log is a plain, single-threaded library: time comes in through ``clock`` and nothing here
starts a thread. Sealing is split (``next_segment_to_seal`` / ``write_sealed`` /
``install_sealed``) so an owner may run the Parquet write on a worker thread while it keeps
appending on its own thread; ``seal_pending`` does all three inline.

Layout: sealed segments (oldest first) < rolled segments waiting to be sealed < the active
segment. Offsets are contiguous across segments; inside memory segments they are dense; after
compaction sealed segments may have gaps (Kafka's behaviour), never elsewhere.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ray_broker.errors import CorruptSegment, KafkaStorageError, OffsetOutOfRange
from ray_broker.storage.config import NO_LIMIT, LogConfig
from ray_broker.storage.record_filter import RecordFilter
from ray_broker.storage.schema import (
    RECORD_SCHEMA,
    check_replica_batch,
    empty_table,
    prepare_batch,
)
from ray_broker.storage.segment import (
    HIDDEN_PREFIX,
    PARQUET_SUFFIX,
    TMP_SUFFIX,
    WAL_SUFFIX,
    MemorySegment,
    ReadBudget,
    SealedSegment,
    fsync_path,
    segment_name,
    wal_name,
    write_sealed,
)
from ray_broker.storage.tiered import RemoteTier
from ray_broker.storage.wal import scan

Clock = Callable[[], int]
DEFAULT_MAX_READ_BYTES = 64 * 1024 * 1024
# A filtered read examines at most this many records per call (about 0.1-0.3 s of a core), so a
# selective filter over a long backlog answers in steps instead of holding the partition.
FILTER_SCAN_RECORDS = 2_000_000


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class CutTail:
    """A damaged write-ahead tail that recovery removed."""

    file: str
    bytes_cut: int
    problem: str


@dataclass
class RecoveryReport:
    """What ``Log`` found and repaired when it opened its directory."""

    sealed_segments: int = 0
    wal_segments: int = 0
    records_recovered_from_wal: int = 0
    cut_tails: list[CutTail] = field(default_factory=list)
    finished_seals: list[str] = field(default_factory=list)
    finished_uploads: list[str] = field(default_factory=list)  # remote copy kept, local deleted
    removed_temp_files: list[str] = field(default_factory=list)
    # Files that are not the log's (``export.parquet``, ``backup.wal``): left alone, named here.
    ignored_files: list[str] = field(default_factory=list)
    # Segments after a gap (a rolled WAL that lost its unsynced tail in a power loss): renamed
    # to ``*.cut`` and reported, as Kafka truncates after the first damaged segment.
    cut_segments: list[str] = field(default_factory=list)

    @property
    def bytes_cut(self) -> int:
        return sum(t.bytes_cut for t in self.cut_tails)


Segment = SealedSegment | MemorySegment
CUT_SUFFIX = ".cut"


class Log:
    """One partition replica's log in ``directory``; opening it recovers what is on disk.

    Raises (on open):
        CorruptSegment: a sealed segment is unreadable. (A gap in the offsets — a rolled WAL
            that lost its unsynced tail — cuts the log after it, reported in ``recovery``.)
        KafkaStorageError: the directory cannot be created or written.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        config: LogConfig | None = None,
        clock: Clock = wall_clock_ms,
        remote_path: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.config = config or LogConfig()
        self._clock = clock
        # Where this log's segments go in remote storage, relative to remote.storage.uri
        # (storage/tiered.py); the tier itself opens on first use, so enabling it by altering the
        # topic's config works on a running log.
        self._remote_path = remote_path or self.directory.name
        self._tier: RemoteTier | None = None
        self._sealed: list[SealedSegment] = []
        self._sealed_bases: list[int] = []
        self._unsealed: list[MemorySegment] = []  # rolled, waiting for their Parquet write
        self._messages_since_fsync = 0
        self._last_fsync_ms = clock()
        self._last_read: SealedSegment | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            message = f"cannot create log directory {self.directory}: {exc}"
            raise KafkaStorageError(message) from None
        self.recovery = RecoveryReport()
        self._active = self._recover()

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        config: LogConfig | None = None,
        clock: Clock = wall_clock_ms,
        remote_path: str | None = None,
    ) -> Log:
        """Open (and recover) the log in ``directory``; the same as calling ``Log(...)``."""
        return cls(directory, config, clock, remote_path)

    def remote_tier(self) -> RemoteTier | None:
        """The remote storage of this log, if its topic enables it.

        Raises:
            InvalidConfig, KafkaStorageError: the URI cannot be opened.
        """
        cfg = self.config
        if not cfg.remote_storage_enable or cfg.remote_storage_uri is None:
            return None
        if self._tier is None or self._tier.uri != cfg.remote_storage_uri.rstrip("/"):
            self._tier = RemoteTier(cfg.remote_storage_uri, self._remote_path)
        return self._tier

    # --- recovery -------------------------------------------------------------------------------

    def _recover(self) -> MemorySegment:
        report = self.recovery
        for tmp in self.directory.glob(f"*{TMP_SUFFIX}"):
            tmp.unlink()
            report.removed_temp_files.append(tmp.name)
        parquet_bases = set(self._segment_files(PARQUET_SUFFIX, ""))
        wal_bases = sorted(self._segment_files(WAL_SUFFIX, HIDDEN_PREFIX))
        for base in list(wal_bases):
            if base in parquet_bases:  # sealed and renamed, crashed before the WAL delete
                wal = self.directory / wal_name(base)
                wal.unlink()
                wal_bases.remove(base)
                report.finished_seals.append(wal.name)
        tier = self.remote_tier()
        remote_bases = set(tier.bases()) if tier is not None else set()
        for base in sorted(parquet_bases | remote_bases):
            path = self.directory / segment_name(base, PARQUET_SUFFIX)
            if base in remote_bases:
                assert tier is not None
                if base in parquet_bases:  # uploaded, crashed before the local delete
                    path.unlink()
                    report.finished_uploads.append(path.name)
                self._add_sealed(tier.load(base))
            else:
                self._add_sealed(SealedSegment.load(path))
        memory_segments = [self._recover_wal(base) for base in wal_bases]
        report.sealed_segments = len(self._sealed)
        report.wal_segments = len(memory_segments)
        segments: list[Segment] = [*self._sealed, *memory_segments]
        for index, (before, after) in enumerate(zip(segments, segments[1:], strict=False)):
            if before.next_offset != after.base_offset:
                memory_segments = self._cut_after(segments, index, memory_segments)
                break
        if memory_segments:
            active = memory_segments.pop()
            self._unsealed = memory_segments
            active.open_writer()
        else:
            start = self._sealed[-1].next_offset if self._sealed else 0
            active = self._new_segment(start)
        return active

    def _segment_files(self, suffix: str, prefix: str) -> list[int]:
        """Base offsets of this log's segment files with ``suffix``; other files are named in
        the recovery report and left alone."""
        bases = []
        for path in self.directory.glob(f"*{suffix}"):
            stem = path.name.removeprefix(prefix).removesuffix(suffix)
            if path.name.startswith(prefix) and len(stem) == 20 and stem.isdigit():
                bases.append(int(stem))
            else:
                self.recovery.ignored_files.append(path.name)
        return bases

    def _cut_after(
        self, segments: list[Segment], index: int, memory_segments: list[MemorySegment]
    ) -> list[MemorySegment]:
        """Keep segments up to ``index`` (the last one before a gap); rename the rest to
        ``*.cut`` so the log serves what it has instead of refusing to start."""
        for segment in segments[index + 1 :]:
            path = segment.wal_path if isinstance(segment, MemorySegment) else segment.path
            if isinstance(segment, MemorySegment):
                segment.close_writer()
            path.rename(path.with_name(path.name + CUT_SUFFIX))
            self.recovery.cut_segments.append(path.name)
        kept_sealed = [s for s in segments[: index + 1] if not isinstance(s, MemorySegment)]
        self._sealed = kept_sealed
        self._sealed_bases = [s.base_offset for s in kept_sealed]
        fsync_path(self.directory)
        return [s for s in segments[: index + 1] if isinstance(s, MemorySegment)]

    def _recover_wal(self, base: int) -> MemorySegment:
        segment = MemorySegment(self.directory, base, self._clock())
        found = scan(segment.wal_path)
        if found.problem is not None:
            self.recovery.cut_tails.append(
                CutTail(segment.wal_path.name, found.torn_bytes, found.problem)
            )
            os.truncate(segment.wal_path, found.valid_bytes)
        for batch in found.batches:
            first = batch.column("offset")[0].as_py()
            if first != segment.next_offset:
                raise CorruptSegment(
                    f"{segment.wal_path}: batch starts at offset {first}, expected "
                    f"{segment.next_offset}"
                )
            segment.add(batch)
        segment.wal_bytes = found.valid_bytes
        self.recovery.records_recovered_from_wal += segment.num_records
        return segment

    def _new_segment(self, base: int) -> MemorySegment:
        segment = MemorySegment(self.directory, base, self._clock())
        segment.open_writer()
        fsync_path(self.directory)
        return segment

    def _add_sealed(self, segment: SealedSegment) -> None:
        self._sealed.append(segment)
        self._sealed_bases.append(segment.base_offset)

    # --- state ----------------------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return self._segments_first().base_offset

    @property
    def log_end_offset(self) -> int:
        return self._active.next_offset

    @property
    def size_bytes(self) -> int:
        return sum(s.size_bytes for s in self._all_segments())

    @property
    def active_base_offset(self) -> int:
        return self._active.base_offset

    def segment_bases(self) -> list[int]:
        return [s.base_offset for s in self._all_segments()]

    def sealed_files(self, start: int, end: int) -> list[tuple[str, int, int]]:
        """(path or URI, base offset, next offset) of the Parquet segments holding offsets in
        ``[start, end)`` — for readers that read the files themselves (``ray_broker.data``).
        Remote segments are named by URI (readable from any node), local ones by path."""
        out = []
        for s in self._sealed:
            if s.next_offset > start and s.base_offset < end:
                if s.remote and self._tier is not None:
                    where = self._tier.uri_of(s.base_offset)
                else:
                    where = str(s.path)
                out.append((where, s.base_offset, s.next_offset))
        return out

    # --- tiered storage ----------------------------------------------------------------------

    def segments_to_tier(self, committed_end: int) -> list[SealedSegment]:
        """Local sealed segments, oldest first, past local.retention.ms and fully committed."""
        if self.remote_tier() is None or self.config.local_retention == NO_LIMIT:
            return []
        horizon = self._clock() - self.config.local_retention
        out = []
        for segment in self._sealed:
            if segment.remote:
                continue
            if segment.next_offset > committed_end or segment.max_timestamp >= horizon:
                break
            out.append(segment)
        return out

    def upload(self, segment: SealedSegment) -> SealedSegment:
        """Copy a local segment to remote storage (no change to the log: safe on a worker
        thread). Raises KafkaStorageError."""
        tier = self.remote_tier()
        assert tier is not None, "segments_to_tier() returned a segment without a tier"
        return tier.upload(Path(segment.path), segment.base_offset)

    def install_uploaded(self, local: SealedSegment, remote: SealedSegment) -> bool:
        """Serve ``remote`` in place of ``local`` and delete the local file; False (and the
        remote copy deleted) if ``local`` left the log meanwhile (retention)."""
        if local not in self._sealed:
            remote.delete()
            return False
        index = self._sealed.index(local)
        self._sealed[index] = remote
        if self._last_read is local:
            self._last_read = None
        local.delete()
        return True

    @property
    def memory_start_offset(self) -> int:
        """The first offset held only in memory (rolled-but-unsealed or active segments)."""
        return (self._unsealed[0] if self._unsealed else self._active).base_offset

    def _segments_first(self) -> Segment:
        if self._sealed:
            return self._sealed[0]
        return self._unsealed[0] if self._unsealed else self._active

    def _all_segments(self) -> list[Segment]:
        return [*self._sealed, *self._unsealed, self._active]

    # --- writes ---------------------------------------------------------------------------------

    def append(self, data: pa.RecordBatch | pa.Table) -> tuple[int, int]:
        """Assign offsets to a producer's batch and log it; returns (base_offset, last_offset).

        The batch reaches the OS before this returns. A failed append leaves the log unchanged.

        Raises:
            InvalidRecord: the batch breaks the record schema (see ``schema.prepare_batch``).
            RecordTooLarge: a record exceeds max.message.bytes.
            KafkaStorageError: the write-ahead file cannot be written.
        """
        now = self._clock()
        batch = prepare_batch(
            data,
            base_offset=self.log_end_offset,
            now_ms=now,
            log_append_time=self.config.message_timestamp_type == "LogAppendTime",
            max_message_bytes=self.config.max_message_bytes,
            require_keys=self.config.compacts,
        )
        return self._log_batch(batch, now)

    def append_replica(self, data: pa.RecordBatch | pa.Table) -> tuple[int, int]:
        """Log a batch that already carries offsets (a follower copying its leader).

        Raises:
            InvalidRecord: wrong schema or offsets not dense from the log end offset.
            KafkaStorageError: the write-ahead file cannot be written.
        """
        batch = check_replica_batch(data, self.log_end_offset)
        return self._log_batch(batch, self._clock())

    def _log_batch(self, batch: pa.RecordBatch, now: int) -> tuple[int, int]:
        self.maybe_roll(incoming_bytes=batch.nbytes, now_ms=now)
        writer = self._active.writer
        assert writer is not None, "the active segment always has an open write-ahead file"
        size_before = writer.size_bytes
        try:
            writer.append(batch)
        except OSError as exc:
            # If even the truncate fails the disk is gone; recovery cuts the torn frame by CRC.
            with contextlib.suppress(OSError):
                writer.truncate(size_before)
            raise KafkaStorageError(f"append to {writer.path} failed: {exc}") from None
        base = self._active.next_offset
        self._active.add(batch)
        self._messages_since_fsync += batch.num_rows
        self._maybe_fsync(now)
        return base, base + batch.num_rows - 1

    def _maybe_fsync(self, now: int) -> None:
        cfg = self.config
        by_count = cfg.flush_messages is not None and (
            self._messages_since_fsync >= cfg.flush_messages
        )
        by_time = cfg.flush_ms is not None and now - self._last_fsync_ms >= cfg.flush_ms
        due = by_count or by_time
        if due:
            self.flush()

    def flush(self) -> None:
        """fsync the active write-ahead file (what ``flush.messages``/``flush.ms`` trigger)."""
        if self._active.writer is not None:
            self._active.writer.fsync()
        self._messages_since_fsync = 0
        self._last_fsync_ms = self._clock()

    def maybe_roll(self, incoming_bytes: int = 0, now_ms: int | None = None) -> bool:
        """Roll the active segment if it is full (segment.bytes) or old (segment.ms)."""
        active = self._active
        if active.num_records == 0:
            return False
        now = self._clock() if now_ms is None else now_ms
        too_big = active.size_bytes + incoming_bytes > self.config.segment_bytes
        too_old = now - active.created_ms >= self.config.segment_ms
        if too_big or too_old:
            self.roll()
            return True
        return False

    def roll(self) -> None:
        """Start a new active segment; the old one waits in memory to be sealed."""
        if self._active.num_records == 0:
            return
        # Durable before it stops being the active segment: a power loss must not leave a
        # rolled WAL with a lost tail followed by newer segments (a gap).
        if self._active.writer is not None:
            self._active.writer.fsync()
        self._active.close_writer()
        self._unsealed.append(self._active)
        self._active = self._new_segment(self._active.next_offset)

    # --- sealing --------------------------------------------------------------------------------

    @property
    def unsealed_bytes(self) -> int:
        """Bytes of rolled segments still waiting for their Parquet write (held in memory)."""
        return sum(segment.size_bytes for segment in self._unsealed)

    def next_segment_to_seal(self) -> MemorySegment | None:
        return self._unsealed[0] if self._unsealed else None

    def write_sealed(self, segment: MemorySegment) -> SealedSegment:
        """Write a rolled segment's Parquet file; touches no log state (thread-safe)."""
        return self._write(segment.to_table(), segment.base_offset, segment.next_offset)

    def _write(self, table: pa.Table, base_offset: int, next_offset: int) -> SealedSegment:
        return write_sealed(
            self.directory,
            table,
            base_offset,
            next_offset,
            compression=self.config.segment_compression,
            row_group_records=self.config.segment_row_group_records,
        )

    def install_sealed(self, segment: MemorySegment, sealed: SealedSegment) -> None:
        """Swap a rolled segment for its Parquet file and delete its write-ahead file."""
        if not self._unsealed or self._unsealed[0] is not segment:
            # Truncated away while the Parquet file was written: the file is stale, and left in
            # place it would shadow a new segment with the same base offset on recovery.
            sealed.delete()
            return
        self._unsealed.pop(0)
        self._add_sealed(sealed)
        segment.wal_path.unlink(missing_ok=True)

    def seal_pending(self) -> int:
        """Seal every rolled segment now; returns how many were sealed."""
        count = 0
        while (segment := self.next_segment_to_seal()) is not None:
            self.install_sealed(segment, self.write_sealed(segment))
            count += 1
        return count

    # --- reads ----------------------------------------------------------------------------------

    def read(
        self, offset: int, max_records: int = 10_000, max_bytes: int = DEFAULT_MAX_READ_BYTES
    ) -> pa.Table:
        """Records from ``offset`` on, at most ``max_records`` and about ``max_bytes``.

        In-memory segments are returned as zero-copy slices; sealed segments read only the row
        groups whose offset statistics cover the range. At least one record is returned when
        any exists at or after ``offset``, however large. Reading at the log end returns an
        empty table.

        Raises:
            OffsetOutOfRange: ``offset`` is below the log start or above the log end.
        """
        self.check_offset(offset)
        budget = ReadBudget(max_records, max_bytes)
        batches: list[pa.RecordBatch] = []
        for segment in self._segments_from(offset):
            if budget.exhausted:
                break
            if isinstance(segment, SealedSegment) and segment is not self._last_read:
                if self._last_read is not None:
                    self._last_read.release()
                self._last_read = segment
            batches.extend(segment.read(max(offset, segment.base_offset), budget))
        if not batches:
            return empty_table()
        return pa.Table.from_batches(batches, schema=RECORD_SCHEMA)

    def read_filtered(
        self,
        offset: int,
        end: int,
        flt: RecordFilter,
        max_records: int = 10_000,
        max_bytes: int = DEFAULT_MAX_READ_BYTES,
        max_examined: int = FILTER_SCAN_RECORDS,
    ) -> tuple[pa.Table, int]:
        """Records in ``[offset, end)`` that match ``flt`` (``read``'s limits apply to the
        matches), and the offset to read next: past every record examined, matching or not, so
        a consumer moves over filtered-out records without receiving them. At most
        ``max_examined`` records are examined per call, bounding the time one read takes.

        Raises:
            OffsetOutOfRange: ``offset`` is below the log start or above the log end.
        """
        self.check_offset(offset)
        budget = ReadBudget(max_records, max_bytes)
        batches: list[pa.RecordBatch] = []
        position, examined = offset, 0
        for segment in self._segments_from(offset):
            if budget.exhausted or examined >= max_examined or position >= end:
                break
            if isinstance(segment, SealedSegment) and segment is not self._last_read:
                if self._last_read is not None:
                    self._last_read.release()
                self._last_read = segment
            scan = segment.scan(
                max(position, segment.base_offset), end, flt, budget, max_examined - examined
            )
            batches.extend(scan.batches)
            position, examined = max(position, scan.next_offset), examined + scan.examined
            if scan.truncated:
                break
        table = pa.Table.from_batches(batches, schema=RECORD_SCHEMA) if batches else empty_table()
        return table, position

    def check_offset(self, offset: int) -> None:
        """Raises OffsetOutOfRange unless log start <= ``offset`` <= log end."""
        start, end = self.log_start_offset, self.log_end_offset
        if not start <= offset <= end:
            raise OffsetOutOfRange(
                f"offset {offset} is outside the log's range [{start}, {end}] "
                f"({self.directory}); seek to the beginning or end",
                offset=offset,
                log_start=start,
                log_end=end,
            )

    def _segments_from(self, offset: int) -> Iterable[Segment]:
        memory = [*self._unsealed, self._active]
        if offset >= memory[0].base_offset:
            index = max(bisect.bisect_right([s.base_offset for s in memory], offset) - 1, 0)
            yield from memory[index:]
            return
        index = max(bisect.bisect_right(self._sealed_bases, offset) - 1, 0)
        yield from self._sealed[index:]
        yield from memory

    def offset_for_time(self, timestamp: int) -> int | None:
        """The earliest offset whose timestamp is >= ``timestamp``, or None if there is none."""
        for segment in self._all_segments():
            if segment.max_timestamp >= timestamp:
                found = segment.offset_for_time(timestamp)
                if found is not None:
                    return found
        return None

    # --- truncation, retention, compaction --------------------------------------------------------

    def truncate_to(self, offset: int) -> None:
        """Remove every record at or above ``offset`` (a follower cutting a divergent tail).

        Raises:
            OffsetOutOfRange: ``offset`` is below the log start or above the log end.
        """
        self.check_offset(offset)
        if offset == self.log_end_offset:
            return
        kept: pa.Table | None = None
        for segment in reversed(self._all_segments()):
            if segment.base_offset >= offset:
                self._drop_segment(segment)
                continue
            table = segment.to_table()
            table = table.filter(pc.less(table.column("offset"), offset))
            if isinstance(segment, SealedSegment):
                # Rewritten in place: a compacted segment may have gaps, so it stays sealed.
                index = self._sealed.index(segment)
                segment.release()
                self._sealed[index] = self._write(table, segment.base_offset, offset)
            else:
                self._drop_segment(segment)
                kept = table
            break
        self._active = self._new_segment(offset if kept is None else segment.base_offset)
        for batch in kept.combine_chunks().to_batches() if kept is not None else []:
            self._log_batch(batch, self._clock())
        assert self.log_end_offset == offset, (self.log_end_offset, offset)

    def reset_to(self, offset: int) -> None:
        """Drop every record and continue empty from ``offset``: a follower so far behind that
        its leader no longer has the records it would need next (retention deleted them)."""
        assert offset >= 0
        for segment in reversed(self._all_segments()):
            self._drop_segment(segment)
        self._active = self._new_segment(offset)

    def _drop_segment(self, segment: Segment) -> None:
        if isinstance(segment, SealedSegment):
            self._sealed.remove(segment)
            self._sealed_bases.remove(segment.base_offset)
            if self._last_read is segment:
                self._last_read = None
            segment.delete()
        else:
            segment.close_writer()
            if segment in self._unsealed:
                self._unsealed.remove(segment)
            segment.wal_path.unlink(missing_ok=True)

    def apply_retention(self) -> list[int]:
        """Delete whole sealed segments past retention.ms / retention.bytes, oldest first.

        Returns the base offsets of deleted segments. The active and unsealed segments are
        never deleted, so the log end offset never moves backwards.
        """
        if not self.config.deletes:
            return []
        now = self._clock()
        deleted: list[int] = []
        retention_ms, retention_bytes = self.config.retention_ms, self.config.retention_bytes
        total = self.size_bytes
        while self._sealed:
            oldest = self._sealed[0]
            expired = retention_ms != NO_LIMIT and oldest.max_timestamp < now - retention_ms
            oversize = retention_bytes != NO_LIMIT and total - oldest.size_bytes >= retention_bytes
            if not (expired or oversize):
                break
            total -= oldest.size_bytes
            self._drop_segment(oldest)
            deleted.append(oldest.base_offset)
        return deleted

    def compact(self) -> int:
        """Keep only the newest record per key in sealed segments; returns records removed.

        Tombstones (null values) are removed once older than delete.retention.ms. Segments keep
        their offset ranges (a segment may become empty), so offsets never shift.
        """
        if not self.config.compacts or not self._sealed:
            return 0
        now = self._clock()
        tables = [s.to_table() for s in self._sealed]
        keys_offsets = pa.concat_tables([t.select(["key", "offset"]) for t in tables])
        latest = keys_offsets.group_by("key").aggregate([("offset", "max")])
        survivors = latest.column("offset_max").combine_chunks()
        removed = 0
        for segment, table in zip(list(self._sealed), tables, strict=True):
            keep = pc.is_in(table.column("offset"), value_set=survivors)
            expired_tombstone = pc.and_(
                pc.is_null(table.column("value")),
                pc.less(table.column("timestamp"), now - self.config.delete_retention_ms),
            )
            kept = table.filter(pc.and_(keep, pc.invert(expired_tombstone)))
            if kept.num_rows == table.num_rows:
                continue
            removed += table.num_rows - kept.num_rows
            rewritten = self._write(kept, segment.base_offset, segment.next_offset)
            index = self._sealed.index(segment)
            segment.release()
            if self._last_read is segment:
                self._last_read = None
            self._sealed[index] = rewritten
        return removed

    def close(self) -> None:
        for segment in self._all_segments():
            if isinstance(segment, MemorySegment):
                segment.close_writer()
            else:
                segment.release()
