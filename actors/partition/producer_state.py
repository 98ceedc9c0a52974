"""Idempotent-producer state of one partition: which sequence numbers each producer has written.

A producer numbers its records per partition. A retried batch whose sequences were already
appended is answered with the original offsets instead of being written twice; a batch that skips
sequences (an earlier one failed) is refused with ``OutOfOrderSequence`` so the producer resends
in order. This is Kafka's KIP-98 idempotence, keyed by (producer id, epoch).

The state is rebuilt from the log's own ``producer_id``/``sequence`` columns after a restart, so
a retry that crosses an actor crash is still deduplicated.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_broker.errors import OutOfOrderSequence, ProducerFenced

RUNS_KEPT_PER_PRODUCER = 16  # Kafka keeps 5 batches; runs merge adjacent batches, so a few more
# Sequences are int32 and wrap to 0 after 2**31 - 1, as Kafka's do: a producer may write any
# number of records to a partition.
SEQUENCE_MOD = 2**31


def next_sequence(sequence: int, count: int = 1) -> int:
    return (sequence + count) % SEQUENCE_MOD


def _distance(start: int, to: int) -> int:
    """How far ``to`` is past ``start`` on the wrapping sequence circle."""
    return (to - start) % SEQUENCE_MOD


@dataclass
class SequenceRun:
    """Records ``first_sequence..last_sequence`` of one producer at offsets from ``base_offset``."""

    first_sequence: int
    last_sequence: int
    base_offset: int


@dataclass
class ProducerEntry:
    epoch: int
    runs: deque[SequenceRun] = field(default_factory=lambda: deque(maxlen=RUNS_KEPT_PER_PRODUCER))
    last_seen_ms: int = 0  # when it last wrote here; idle entries expire

    @property
    def last_sequence(self) -> int:
        return self.runs[-1].last_sequence if self.runs else -1


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class ProducerStates:
    """Per-producer sequence bookkeeping for one partition.

    Bounded like Kafka's: an entry not written to for ``producer.id.expiration.ms`` is dropped
    by ``expire`` (a producer that comes back after that starts a fresh sequence).
    """

    def __init__(self, clock: Callable[[], int] = _wall_clock_ms) -> None:
        self._producers: dict[int, ProducerEntry] = {}
        self._clock = clock

    def expire(self, max_idle_ms: int) -> int:
        """Forget producers idle for longer than ``max_idle_ms``; returns how many."""
        cutoff = self._clock() - max_idle_ms
        idle = [pid for pid, entry in self._producers.items() if entry.last_seen_ms < cutoff]
        for pid in idle:
            del self._producers[pid]
        return len(idle)

    def __len__(self) -> int:
        return len(self._producers)

    def check(self, producer_id: int, epoch: int, first_sequence: int, count: int) -> int | None:
        """Validate a batch before it is appended.

        Returns the base offset the batch already has if it is a duplicate, else None.

        Raises:
            ProducerFenced: ``epoch`` is older than the producer's current epoch.
            OutOfOrderSequence: the batch does not continue the producer's sequence.
        """
        entry = self._producers.get(producer_id)
        if entry is None:
            return None  # a new producer, or one whose state aged out of the log
        if epoch < entry.epoch:
            raise ProducerFenced(
                f"producer {producer_id} epoch {epoch} is older than its current epoch "
                f"{entry.epoch}; a newer producer instance took over"
            )
        if epoch > entry.epoch:
            if first_sequence != 0:
                raise OutOfOrderSequence(
                    f"producer {producer_id} started epoch {epoch} at sequence {first_sequence}, "
                    "expected 0"
                )
            return None
        last = next_sequence(first_sequence, count - 1)
        expected = next_sequence(entry.last_sequence)
        if first_sequence == expected:
            return None
        for run in entry.runs:
            into = _distance(run.first_sequence, first_sequence)
            if into + count <= _distance(run.first_sequence, run.last_sequence) + 1:
                return run.base_offset + into
        raise OutOfOrderSequence(
            f"producer {producer_id} sent sequences {first_sequence}..{last} but the partition "
            f"expects {expected}; resend the earlier batches first"
        )

    def is_ahead(self, producer_id: int, epoch: int, first_sequence: int) -> bool:
        """True if the batch skips sequences that may still be on their way.

        Ray runs an async actor's calls in no guaranteed order, so a producer's batches can
        arrive swapped; the partition waits a little for the earlier ones instead of refusing.
        """
        entry = self._producers.get(producer_id)
        if entry is None or epoch > entry.epoch:
            return first_sequence > 0
        skipped = _distance(next_sequence(entry.last_sequence), first_sequence)
        return epoch == entry.epoch and 0 < skipped < SEQUENCE_MOD // 2

    def record(
        self, producer_id: int, epoch: int, first_sequence: int, count: int, base_offset: int
    ) -> None:
        """Remember an appended batch (merging it into the previous run when contiguous)."""
        entry = self._producers.get(producer_id)
        if entry is None or epoch > entry.epoch:
            entry = self._producers[producer_id] = ProducerEntry(epoch)
        entry.last_seen_ms = self._clock()
        last = next_sequence(first_sequence, count - 1)
        if entry.runs:
            run = entry.runs[-1]
            follows = next_sequence(run.last_sequence) == first_sequence
            length = _distance(run.first_sequence, run.last_sequence) + 1
            adjacent = run.base_offset + length == base_offset
            if follows and adjacent:
                run.last_sequence = last
                return
        entry.runs.append(SequenceRun(first_sequence, last, base_offset))

    def bump(self, producer_id: int, epoch: int) -> None:
        """A transaction marker moved the producer to ``epoch``: writes of older epochs are
        fenced from now on, and the new epoch's sequences start at 0."""
        entry = self._producers.get(producer_id)
        if entry is None or epoch > entry.epoch:
            self._producers[producer_id] = ProducerEntry(epoch, last_seen_ms=self._clock())

    def rebuild(self, table: pa.Table) -> None:
        """Replay the producer columns of records read back from the log, in offset order."""
        if table.num_rows == 0:
            return
        pids = table.column("producer_id")
        if pids.null_count == table.num_rows:
            return
        # Only the four small columns: filtering the whole table would copy every value.
        columns = table.select(["offset", "producer_id", "producer_epoch", "sequence"])
        sequences = table.column("sequence")
        if sequences.null_count:  # transaction markers: no sequence, they move the epoch on
            markers = columns.filter(pc.and_(pids.is_valid(), sequences.is_null()))
            rows = columns.filter(pc.and_(pids.is_valid(), sequences.is_valid()))
        else:
            markers, rows = None, columns.filter(pids.is_valid())
        self._rebuild_runs(rows)
        if markers is not None:
            for pid, epoch in zip(
                markers.column("producer_id").to_pylist(),
                markers.column("producer_epoch").to_pylist(),
                strict=True,
            ):
                self.bump(pid, epoch)

    def _rebuild_runs(self, rows: pa.Table) -> None:
        if rows.num_rows == 0:
            return
        pid = rows.column("producer_id").to_numpy()
        epoch = rows.column("producer_epoch").to_numpy()
        seq = rows.column("sequence").to_numpy().astype(np.int64)
        offset = rows.column("offset").to_numpy()
        starts = np.ones(len(pid), dtype=bool)
        starts[1:] = (
            (pid[1:] != pid[:-1])
            | (epoch[1:] != epoch[:-1])
            | (seq[1:] != (seq[:-1] + 1) % SEQUENCE_MOD)
            | (offset[1:] != offset[:-1] + 1)
        )
        bounds = [*np.flatnonzero(starts).tolist(), len(pid)]
        for begin, end in zip(bounds, bounds[1:], strict=False):
            self.record(
                int(pid[begin]),
                int(epoch[begin]),
                int(seq[begin]),
                end - begin,
                int(offset[begin]),
            )
