"""A seeded simulation of transactions over the real decision classes: the coordinator's
``TransactionStates`` (rebuilt from its persisted documents after every crash), three real
``Partition`` cores on disk, and producer incarnations of one transactional id whose writes may
be delayed past the end of their transaction, fenced by newer incarnations or timed out.

Random steps: a new incarnation (fencing the old, aborting its open transaction), adding
partitions, transactional writes (delivered now or held back and delivered later, as a slow
network would), plain writes, commit or abort with the coordinator crashing after writing only
some markers, coordinator restarts that finish the decided transactions, clock ticks that time
transactions out, and partition restarts (recovery from the log and the transaction index).

After the run every decided transaction is finished and every open one times out; then:
* no aborted read (Jepsen's G1a): read_committed returns no record of an aborted transaction;
* no torn transaction: every record the partitions accepted for a committed transaction is
  returned, on every partition;
* nothing else: plain records, and nothing of a transaction that never committed;
* the last stable offset of every partition reaches its high watermark (nothing left open).
"""

from __future__ import annotations

import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from ray_broker import errors
from ray_broker.actors.coordination.transaction_state import MarkerPlan, TransactionStates
from ray_broker.actors.partition.core import Partition
from ray_broker.config import TopicConfig

TOPIC = "t"
PARTITIONS = 3
TID = "app"
TIMEOUT_MS = 5_000
STEPS = 60


class InvariantBroken(AssertionError):
    pass


@dataclass
class Incarnation:
    producer_id: int
    epoch: int
    sequences: dict[int, int] = field(default_factory=dict)
    written: int = 0


class TxnWorld:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 1_000
        self.trace: list[str] = []
        self.directory = Path(tempfile.mkdtemp(prefix=f"txn-sim-{seed}-"))
        self.partitions = [self._open(p) for p in range(PARTITIONS)]
        self.documents: dict[str, dict] = {}  # the coordinator's durable state
        self.next_producer_id = 0
        self.states = self._coordinator()
        self.pending: list[MarkerPlan] = []  # decided, markers not all written
        self.incarnations: list[Incarnation] = []
        self.delayed: list[tuple[Incarnation, int, pa.Table, int]] = []
        # Records the partitions accepted: (producer id, epoch) -> [(partition, offset)].
        self.accepted: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self.outcome: dict[tuple[int, int], bool] = {}  # the decision: commit?
        self.plain: list[tuple[int, int]] = []

    # --- parts ------------------------------------------------------------------------------

    def _open(self, p: int) -> Partition:
        return Partition(TOPIC, p, self.directory / f"p{p}", TopicConfig(), clock=lambda: self.now)

    def _allocate(self) -> int:
        self.next_producer_id += 1
        return self.next_producer_id

    def _coordinator(self) -> TransactionStates:
        states = TransactionStates(self._allocate, clock=lambda: self.now)
        for tid, document in self.documents.items():
            states.load(tid, document)
        return states

    def _persist(self) -> None:
        meta = self.states.txns.get(TID)
        if meta is not None:
            self.documents[TID] = meta.to_document()

    def _decide(self, plan: MarkerPlan) -> None:
        key = (plan.producer_id, plan.marker_epoch - 1)
        self.outcome.setdefault(key, plan.commit)
        if self.outcome[key] != plan.commit:
            raise InvariantBroken(f"transaction {key} decided both ways")
        self.pending.append(plan)

    def _markers(self, plan: MarkerPlan, crash_after: int | None = None) -> bool:
        """Write ``plan``'s markers (all, or only the first ``crash_after``); True if all."""
        for i, (_, p) in enumerate(plan.partitions):
            if crash_after is not None and i >= crash_after:
                return False
            self.partitions[p].write_marker(plan.producer_id, plan.marker_epoch, plan.commit)
            self._commit_all(p)
        return True

    def _finish(self, plan: MarkerPlan, timed_out: bool = False) -> None:
        self._markers(plan)
        self.states.complete(plan, timed_out=timed_out)
        self._persist()
        if plan in self.pending:
            self.pending.remove(plan)

    def _commit_all(self, p: int) -> None:
        partition = self.partitions[p]
        partition.advance_high_watermark(partition.log_end_offset)  # RF=1: acked is committed

    # --- steps ------------------------------------------------------------------------------

    def step(self) -> None:
        action = self.rng.choice(
            [
                "init",
                "add",
                "write",
                "write",
                "write",
                "delay",
                "deliver",
                "plain",
                "end",
                "crash",
                "tick",
                "restart_partition",
            ]
        )
        self.trace.append(action)
        getattr(self, f"_{action}")()

    def _current(self) -> Incarnation | None:
        """Mostly the newest incarnation; sometimes a zombie."""
        if not self.incarnations:
            return None
        if self.rng.random() < 0.75:
            return self.incarnations[-1]
        return self.rng.choice(self.incarnations)

    def _init(self) -> None:
        try:
            meta, abort = self.states.init_producer_id(TID, TIMEOUT_MS)
        except errors.ConcurrentTransactions:
            for plan in list(self.pending):
                self._finish(plan)
            meta, abort = self.states.init_producer_id(TID, TIMEOUT_MS)
        if abort is not None:
            self._persist()
            self._decide(abort)
            self._finish(abort)
            meta, _ = self.states.init_producer_id(TID, TIMEOUT_MS)
        self._persist()
        self.incarnations.append(Incarnation(meta.producer_id, meta.epoch))

    def _add(self) -> None:
        inc = self._current()
        if inc is None:
            return
        p = self.rng.randrange(PARTITIONS)
        try:
            self.states.add(TID, inc.producer_id, inc.epoch, [(TOPIC, p)])
            self._persist()
        except (errors.ProducerFenced, errors.TransactionTimedOut, errors.ConcurrentTransactions):
            pass

    def _next_write(self, inc: Incarnation) -> tuple[Incarnation, int, pa.Table, int]:
        """A new batch of ``inc`` to a random partition, with its sequence numbers."""
        inc.written += 1
        value = f"{inc.producer_id}-{inc.epoch}-{inc.written}".encode()
        batch = pa.table({"value": pa.array([value, value + b"b"], pa.binary())})
        p = self.rng.randrange(PARTITIONS)
        sequence = inc.sequences.get(p, 0)
        inc.sequences[p] = sequence + batch.num_rows
        return inc, p, batch, sequence

    def _write(self, delayed: tuple[Incarnation, int, pa.Table, int] | None = None) -> None:
        if delayed is None:
            inc = self._current()
            if inc is None:
                return
            delayed = self._next_write(inc)
        inc, p, batch, sequence = delayed
        partition = self.partitions[p]
        # The partition actor's KIP-890 check, then the core's epoch and sequence checks.
        if not partition.txns.is_open(inc.producer_id, inc.epoch) and not self.states.verify(
            inc.producer_id, inc.epoch, TOPIC, p
        ):
            return
        try:
            result = partition.produce(batch, inc.producer_id, inc.epoch, sequence, True)
        except (errors.ProducerFenced, errors.OutOfOrderSequence):
            return
        if not result.duplicate:
            offsets = range(result.base_offset, result.last_offset + 1)
            self.accepted.setdefault((inc.producer_id, inc.epoch), []).extend(
                (p, o) for o in offsets
            )
        self._commit_all(p)

    def _delay(self) -> None:
        inc = self._current()
        if inc is not None:
            self.delayed.append(self._next_write(inc))

    def _deliver(self) -> None:
        if self.delayed:
            self._write(self.delayed.pop(self.rng.randrange(len(self.delayed))))

    def _plain(self) -> None:
        p = self.rng.randrange(PARTITIONS)
        result = self.partitions[p].produce(pa.table({"value": [b"plain"]}))
        self.plain.append((p, result.base_offset))
        self._commit_all(p)

    def _end(self) -> None:
        inc = self._current()
        if inc is None:
            return
        commit = self.rng.random() < 0.6
        try:
            meta, plan = self.states.end(TID, inc.producer_id, inc.epoch, commit)
        except (
            errors.ProducerFenced,
            errors.TransactionTimedOut,
            errors.ConcurrentTransactions,
        ):
            return
        self._persist()
        if plan is None:
            inc.epoch, inc.sequences = meta.epoch, {}
            return
        self._decide(plan)
        crash_after = self.rng.randrange(len(plan.partitions) + 1)
        if self.rng.random() < 0.3 and self._markers(plan, crash_after) is False:
            # Some markers written, then the coordinator dies; the producer, which got no
            # answer, retries the same end and must get its next epoch, not ProducerFenced.
            self._crash()
            try:
                meta, again = self.states.end(TID, inc.producer_id, inc.epoch, commit)
            except errors.ProducerFenced as exc:
                raise InvariantBroken(f"a retried end was fenced: {exc}") from None
            if again is not None:
                raise InvariantBroken("a retried end of a finished transaction wrote markers")
        else:
            self._finish(plan)
        inc.epoch, inc.producer_id, inc.sequences = meta.epoch, meta.producer_id, {}

    def _crash(self) -> None:
        """The coordinator restarts from its documents and finishes what was decided."""
        self.states = self._coordinator()
        self.pending = []
        for plan in self.states.preparing():
            self.pending.append(plan)
        for plan in list(self.pending):
            self._finish(plan)

    def _tick(self) -> None:
        self.now += self.rng.randrange(0, 4_000)
        for plan in self.states.expired():
            self._persist()
            self._decide(plan)
            self._finish(plan, timed_out=True)

    def _restart_partition(self) -> None:
        p = self.rng.randrange(PARTITIONS)
        hw = self.partitions[p].high_watermark
        self.partitions[p].log.close()
        self.partitions[p] = self._open(p)
        self.partitions[p].advance_high_watermark(hw)

    # --- the run and the checks --------------------------------------------------------------

    def run(self) -> TxnWorld:
        try:
            for _ in range(STEPS):
                self.step()
            while self.delayed:
                self._deliver()
            self._crash()
            self.now += TIMEOUT_MS * 2
            self._tick()
            self.check()
        except InvariantBroken as exc:
            raise InvariantBroken(f"seed {self.seed}: {exc}\ntrace: {self.trace}") from None
        finally:
            for partition in self.partitions:
                partition.log.close()
            shutil.rmtree(self.directory, ignore_errors=True)
        return self

    def check(self) -> None:
        visible: set[tuple[int, int]] = set()
        for p, partition in enumerate(self.partitions):
            partition.advance_high_watermark(partition.log_end_offset)
            if partition.last_stable_offset != partition.high_watermark:
                raise InvariantBroken(
                    f"partition {p}: LSO {partition.last_stable_offset} stuck below the high "
                    f"watermark {partition.high_watermark} with {partition.txns.ongoing} open"
                )
            table = partition.read(0, 1_000_000, 10**9, read_committed=True)
            visible |= {(p, o) for o in table.column("offset").to_pylist()}
        expected = set(self.plain)
        for key, records in self.accepted.items():
            committed = self.outcome.get(key)
            if committed:
                expected |= set(records)
            elif committed is None:
                raise InvariantBroken(f"transaction {key} wrote {records} but was never decided")
        aborted_read = visible - expected
        if aborted_read:
            raise InvariantBroken(f"aborted or unknown records read: {sorted(aborted_read)}")
        torn = expected - visible
        if torn:
            raise InvariantBroken(f"committed records missing (torn/lost): {sorted(torn)}")
