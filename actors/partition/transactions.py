"""Open and aborted transactions of one partition replica: its last stable offset (LSO) and
what ``read_committed`` and every reader hide. A plain class, no Ray.

It follows the records as they are appended (a leader's own writes and a follower's copies
alike): the first transactional batch of a (producer id, epoch) opens a transaction at its
offset; a control record (Kafka's transaction marker, ``attributes`` with ``ATTR_CONTROL``)
closes it, and an abort marker adds the range to the aborted-transaction index. The LSO is the
first offset of the oldest open transaction (or the high watermark): ``read_committed`` never
reads past it, and hides records of aborted transactions below it. Control records are hidden
from every reader.

Durable as an append-only event file beside the log (``_transactions.jsonl``; Kafka keeps a
``.txnindex`` per segment): aborted ranges of long-sealed Parquet segments must survive a
restart without scanning the log. Events at or past the log end after a crash or truncation are
dropped when loading, and the records still in write-ahead segments are observed again, so the
file and the log agree.
"""

from __future__ import annotations

import bisect
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_broker.storage.schema import ATTR_CONTROL, ATTR_TRANSACTIONAL

MARKER_COMMIT = b"COMMIT"
MARKER_ABORT = b"ABORT"
EVENTS_FILE = "_transactions.jsonl"
# The event file is rewritten (open and still-retained aborted transactions only) after this
# many appended events, so it stays small however many transactions ran.
REWRITE_EVERY_EVENTS = 10_000


@dataclass(frozen=True)
class AbortedTransaction:
    producer_id: int
    first_offset: int
    last_offset: int  # the abort marker's offset


class PartitionTransactions:
    """See the module docstring. ``directory=None`` keeps everything in memory (tests)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.ongoing: dict[int, tuple[int, int]] = {}  # producer id -> (epoch, first offset)
        self.aborted: list[AbortedTransaction] = []  # ordered by last_offset
        self._aborted_ends: list[int] = []
        self._path = Path(directory) / EVENTS_FILE if directory is not None else None
        self._events_since_rewrite = 0
        # The offset of the newest event applied: observing the write-ahead tail again after a
        # restart must not apply an event twice.
        self._applied_through = -1

    # --- recovery -------------------------------------------------------------------------------

    def load(self, log_end_offset: int) -> None:
        """Replay the event file, ignoring events at or past ``log_end_offset`` (cut from the
        log by a crash or a truncation); the caller then observes the write-ahead tail again."""
        self.ongoing, self.aborted, self._aborted_ends = {}, [], []
        self._applied_through = -1
        if self._path is None or not self._path.exists():
            return
        with open(self._path, encoding="utf-8") as events:
            for line in events:
                try:
                    event = json.loads(line)
                except ValueError:
                    break  # a torn last line: the records it described are observed again
                if event["o"] >= log_end_offset:
                    continue
                self._apply(event)
        self._rewrite()

    def truncate_to(self, log_end_offset: int) -> None:
        """Forget what the log no longer holds (a follower cut its divergent tail)."""
        if self._path is not None:
            self.load(log_end_offset)  # the event file is the truth; replaying it cuts too
        else:
            self._cut(log_end_offset)

    def _cut(self, log_end_offset: int) -> None:
        self.ongoing = {p: v for p, v in self.ongoing.items() if v[1] < log_end_offset}
        kept = [a for a in self.aborted if a.last_offset < log_end_offset]
        self.aborted, self._aborted_ends = kept, [a.last_offset for a in kept]

    def forget_before(self, log_start_offset: int) -> None:
        """Drop aborted ranges wholly below the log start (retention deleted their records)."""
        cut = bisect.bisect_left(self._aborted_ends, log_start_offset)
        if cut:
            del self.aborted[:cut]
            del self._aborted_ends[:cut]

    # --- following the log ----------------------------------------------------------------------

    def observe(self, batch: pa.Table | pa.RecordBatch) -> None:
        """Follow records just appended (offsets included, in order)."""
        attributes = batch.column("attributes")
        if attributes.null_count == batch.num_rows:
            return  # no transactional or control record: the common case costs one check
        flags = attributes.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int16)
        offsets = batch.column("offset").to_numpy()
        pids = batch.column("producer_id").fill_null(-1).to_numpy(zero_copy_only=False)
        epochs = batch.column("producer_epoch").fill_null(0).to_numpy(zero_copy_only=False)
        marked = np.flatnonzero(flags & (ATTR_TRANSACTIONAL | ATTR_CONTROL))
        control = (flags[marked] & ATTR_CONTROL) != 0
        # Only rows that can change anything: markers, and the first transactional row of a
        # producer's run (after another producer's row or after a marker).
        first_of_run = np.ones(len(marked), dtype=bool)
        first_of_run[1:] = (pids[marked][1:] != pids[marked][:-1]) | control[:-1]
        keys = batch.column("key")
        for i, is_control in zip(
            marked[first_of_run | control].tolist(),
            control[first_of_run | control].tolist(),
            strict=True,
        ):
            pid = int(pids[i])
            if is_control:
                kind = "c" if keys[i].as_py() == MARKER_COMMIT else "a"
                self._record({"k": kind, "p": pid, "o": int(offsets[i])})
            elif pid not in self.ongoing:
                self._record({"k": "b", "p": pid, "e": int(epochs[i]), "o": int(offsets[i])})

    def opened(self, producer_id: int, epoch: int, offset: int) -> None:
        """A transactional batch of this producer was appended at ``offset``."""
        if producer_id not in self.ongoing:
            self._record({"k": "b", "p": producer_id, "e": epoch, "o": offset})

    def closed(self, producer_id: int, offset: int, commit: bool) -> None:
        """A marker ending this producer's transaction was appended at ``offset``."""
        self._record({"k": "c" if commit else "a", "p": producer_id, "o": offset})

    def _record(self, event: dict) -> None:
        if event["o"] <= self._applied_through or not self._apply(event):
            return
        if self._path is None:
            return
        with open(self._path, "a", encoding="utf-8") as events:
            events.write(json.dumps(event, separators=(",", ":")) + "\n")
        self._events_since_rewrite += 1
        if self._events_since_rewrite >= REWRITE_EVERY_EVENTS:
            self._rewrite()

    def _apply(self, event: dict) -> bool:
        """Apply one event; False if it changes nothing."""
        pid, offset = event["p"], event["o"]
        self._applied_through = max(self._applied_through, offset)
        if event["k"] == "h":
            return False  # only the mark above
        if event["k"] == "b":
            if pid in self.ongoing:
                return False
            self.ongoing[pid] = (event["e"], offset)
            return True
        opened = self.ongoing.pop(pid, None)
        if opened is None:
            return False  # a marker for a transaction with no record here (or seen twice)
        if event["k"] == "a":
            self.aborted.append(AbortedTransaction(pid, opened[1], offset))
            self._aborted_ends.append(offset)
        return True

    def _rewrite(self) -> None:
        """Replace the event file by the events that still matter (crash-safe by rename)."""
        self._events_since_rewrite = 0
        if self._path is None:
            return
        lines = []
        for a in self.aborted:
            lines.append({"k": "b", "p": a.producer_id, "e": 0, "o": a.first_offset})
            lines.append({"k": "a", "p": a.producer_id, "o": a.last_offset})
        for pid, (epoch, first) in self.ongoing.items():
            lines.append({"k": "b", "p": pid, "e": epoch, "o": first})
        lines.append({"k": "h", "p": -1, "o": self._applied_through})
        tmp = self._path.with_name(self._path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(e, separators=(",", ":")) + "\n" for e in lines)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self._path)

    # --- reading --------------------------------------------------------------------------------

    def is_open(self, producer_id: int, epoch: int) -> bool:
        opened = self.ongoing.get(producer_id)
        return opened is not None and opened[0] == epoch

    def last_stable_offset(self, high_watermark: int) -> int:
        """The first offset ``read_committed`` may not read yet."""
        if not self.ongoing:
            return high_watermark
        return min(high_watermark, min(first for _, first in self.ongoing.values()))

    def visible(self, table: pa.Table, read_committed: bool) -> pa.Table:
        """``table`` without control records and, for ``read_committed``, without records of
        aborted transactions; the caller reads ``read_committed`` only below the LSO."""
        if table.num_rows == 0 or table.column("attributes").null_count == table.num_rows:
            return table
        flags = pc.fill_null(table.column("attributes"), 0)
        keep = pc.equal(pc.bit_wise_and(flags, pa.scalar(ATTR_CONTROL, pa.int8())), 0)
        if read_committed:
            first = table.column("offset")[0].as_py()
            last = table.column("offset")[-1].as_py()
            start = bisect.bisect_left(self._aborted_ends, first)
            offsets, pids = table.column("offset"), table.column("producer_id")
            for aborted in self.aborted[start:]:
                if aborted.first_offset > last:
                    continue
                inside = pc.and_(
                    pc.equal(pids, aborted.producer_id),
                    pc.and_(
                        pc.greater_equal(offsets, aborted.first_offset),
                        pc.less_equal(offsets, aborted.last_offset),
                    ),
                )
                keep = pc.and_(keep, pc.invert(pc.fill_null(inside, False)))
        return table.filter(keep)
