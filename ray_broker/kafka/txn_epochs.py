"""Kafka's transactional producers keep one epoch; the broker moves to a new one per
transaction. This maps one onto the other.

The broker's transaction coordinator follows KIP-890: every ended transaction bumps the
producer epoch, so a late write of a finished transaction can never land in the next one, and
each epoch's sequences start at 0. Kafka clients speaking EndTxn v0–v4 keep the epoch
InitProducerId gave them for all their transactions and continue their sequence numbers.
The listener therefore translates, per client (producer id, epoch): the broker's current
(producer id, epoch), and per partition the client's sequence at which the current broker
epoch began. A late write of an ended transaction translates to a sequence below that start
and is refused as out of order — the fencing KIP-890 gives, kept for old clients.

The map lives in the listener's memory: after a listener restart a transactional client is
fenced (its epoch is behind the broker's) and must call InitProducerId again, as after a
coordinator failover in Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SEQUENCE_MOD = 2**31
MAX_PRODUCERS = 100_000


@dataclass
class _Producer:
    broker_id: int
    broker_epoch: int
    start: dict[tuple[str, int], int] = field(default_factory=dict)  # client seq at epoch start
    next: dict[tuple[str, int], int] = field(default_factory=dict)  # client's next sequence


class TransactionEpochs:
    """Client (producer id, epoch) → broker (producer id, epoch, sequences)."""

    def __init__(self) -> None:
        self._producers: dict[tuple[int, int], _Producer] = {}

    def registered(self, producer_id: int, epoch: int) -> None:
        """InitProducerId answered (producer_id, epoch): the client's epoch is the broker's."""
        if len(self._producers) >= MAX_PRODUCERS:
            self._producers.pop(next(iter(self._producers)))
        self._producers[(producer_id, epoch)] = _Producer(producer_id, epoch)

    def broker_ids(self, producer_id: int, epoch: int) -> tuple[int, int]:
        """The broker's (producer id, epoch) for a client's; unknown clients pass unchanged
        (the coordinator then fences or refuses them)."""
        producer = self._producers.get((producer_id, epoch))
        if producer is None:
            return producer_id, epoch
        return producer.broker_id, producer.broker_epoch

    def sequence(self, producer_id: int, epoch: int, partition: tuple[str, int], seq: int) -> int:
        """The broker's sequence for a client's first sequence of a batch (-1: this batch
        belongs to a transaction that already ended, which the partition will refuse)."""
        producer = self._producers.get((producer_id, epoch))
        if producer is None:
            return seq
        shifted = (seq - producer.start.get(partition, 0)) % SEQUENCE_MOD
        return -1 if shifted >= SEQUENCE_MOD // 2 else shifted

    def written(
        self, producer_id: int, epoch: int, partition: tuple[str, int], seq: int, count: int
    ) -> None:
        producer = self._producers.get((producer_id, epoch))
        if producer is not None:
            after = (seq + count) % SEQUENCE_MOD
            current = producer.next.get(partition)
            if current is None or (after - current) % SEQUENCE_MOD < SEQUENCE_MOD // 2:
                producer.next[partition] = after

    def ended(self, producer_id: int, epoch: int, broker_id: int, broker_epoch: int) -> None:
        """EndTxn moved the broker to (broker_id, broker_epoch): the client's next
        transaction continues its sequences from where this one stopped."""
        producer = self._producers.get((producer_id, epoch))
        if producer is not None:
            producer.broker_id, producer.broker_epoch = broker_id, broker_epoch
            producer.start = dict(producer.next)
