"""An in-memory partition log for the replication simulator.

It plays ``Partition`` (``actors/partition/core.py``) for ``Replica``: dense offsets, the real
``LeaderEpochCache`` (in memory) and the real ``ProducerStates`` for idempotent deduplication,
with records as plain tuples so thousands of seeded runs finish in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray_broker.actors.partition.producer_state import ProducerStates
from ray_broker.storage.epochs import LeaderEpochCache


@dataclass(frozen=True)
class SimRecord:
    offset: int
    value: str
    producer_id: int
    producer_epoch: int
    sequence: int
    leader_epoch: int


class MemoryPartition:
    """The log of one simulated replica; survives a process crash (the WAL reached the OS)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.records: list[SimRecord] = []
        self.epochs = LeaderEpochCache(None)
        self.producers = ProducerStates()
        self.high_watermark = 0
        self.log_start_offset = 0

    @property
    def log_end_offset(self) -> int:
        return self.log_start_offset + len(self.records)

    def become_leader(self, epoch: int) -> None:
        self.epochs.assign(epoch, self.log_end_offset)

    def advance_high_watermark(self, committed: int) -> bool:
        new = min(committed, self.log_end_offset)
        if new > self.high_watermark:
            self.high_watermark = new
            return True
        return False

    def restart(self) -> None:
        """A process restart: the log and epochs stay, the high watermark is relearned."""
        self.high_watermark = self.log_start_offset

    def produce(
        self, values: list[str], producer_id: int, producer_epoch: int, sequence: int
    ) -> tuple[int, int, bool]:
        """(base offset, last offset, duplicate); raises OutOfOrderSequence/ProducerFenced."""
        count = len(values)
        existing = self.producers.check(producer_id, producer_epoch, sequence, count)
        if existing is not None:
            return existing, existing + count - 1, True
        base = self.log_end_offset
        epoch = self.epochs.latest_epoch
        for i, value in enumerate(values):
            self.records.append(
                SimRecord(base + i, value, producer_id, producer_epoch, sequence + i, epoch)
            )
        self.producers.record(producer_id, producer_epoch, sequence, count, base)
        return base, base + count - 1, False

    def read(self, offset: int, max_records: int) -> list[SimRecord]:
        start = offset - self.log_start_offset
        return self.records[start : start + max_records]

    def append_replica(self, records: list[SimRecord], epochs: list[tuple[int, int]]) -> bool:
        """Copy the leader's records; False if they do not continue this log."""
        if not records:
            return True
        if records[0].offset != self.log_end_offset:
            return False
        base = records[0].offset
        for epoch, start in epochs:
            if start <= base + len(records) - 1 and epoch > self.epochs.latest_epoch:
                self.epochs.assign(epoch, max(start, base))
        self.records.extend(records)
        for record in records:
            self.producers.record(
                record.producer_id, record.producer_epoch, record.sequence, 1, record.offset
            )
        return True

    def truncate_to(self, offset: int) -> None:
        if offset >= self.log_end_offset:
            return
        del self.records[max(offset - self.log_start_offset, 0) :]
        self.epochs.truncate_from(offset)
        self.high_watermark = min(self.high_watermark, offset)
        self.producers = ProducerStates()
        for record in self.records:
            self.producers.record(
                record.producer_id, record.producer_epoch, record.sequence, 1, record.offset
            )
