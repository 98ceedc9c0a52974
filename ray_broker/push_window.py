"""The decisions of push consumption, without Ray or threads: credits and commit progress.

``CreditWindow`` is RabbitMQ's prefetch (``basic.qos``): at most ``credits`` batches are with
the handler at once; a batch's credit comes back when the handler returns (or fails).

``GroupProgress`` is what a consumer-group push subscription may commit. Batches of one
partition can finish out of order when several are in flight, so the committed offset only
moves over a contiguous run of finished batches; a failed batch rewinds its partition to its
first offset (the batches after it are delivered again), which keeps delivery at-least-once
and in order per partition after a failure.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from ray_broker.errors import InvalidConfig
from ray_broker.structs import TopicPartition

# Batches with the handler at once: RabbitMQ caps prefetch at 65535 messages; batches of up to
# ``max_poll_records`` each are coarser, and each holds memory, so the cap is lower.
MAX_PUSH_CREDITS = 1_000


def check_credits(credits: object) -> int:
    """Raises InvalidConfig unless ``credits`` is an int in 1..MAX_PUSH_CREDITS."""
    if (
        not isinstance(credits, int)
        or isinstance(credits, bool)
        or not 1 <= credits <= MAX_PUSH_CREDITS
    ):
        raise InvalidConfig(
            f"credits is the number of batches a push handler may hold at once, an int in "
            f"1..{MAX_PUSH_CREDITS}; got {credits!r}"
        )
    return credits


@dataclass
class Delivery:
    """One batch with the handler: its offset ranges per partition, and the batch itself
    (opaque here) to acknowledge or dead-letter once the handler answered."""

    id: int
    ranges: dict[TopicPartition, tuple[int, int]]  # first, last offset
    records: int
    attempt: int = 1
    batch: Any = None


@dataclass
class CreditWindow:
    credits: int
    outstanding: dict[int, Delivery] = field(default_factory=dict)
    max_held: int = 0  # the most batches the handler ever held at once (stats)
    _ids: itertools.count = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        check_credits(self.credits)

    @property
    def has_credit(self) -> bool:
        return len(self.outstanding) < self.credits

    def start(
        self,
        ranges: dict[TopicPartition, tuple[int, int]],
        records: int,
        attempt: int = 1,
        batch: Any = None,
    ) -> Delivery:
        assert self.has_credit, "a batch was delivered without a credit"
        delivery = Delivery(next(self._ids), ranges, records, attempt, batch)
        self.outstanding[delivery.id] = delivery
        self.max_held = max(self.max_held, len(self.outstanding))
        return delivery

    def finish(self, delivery_id: int) -> Delivery:
        """The handler answered: the credit returns."""
        return self.outstanding.pop(delivery_id)


class GroupProgress:
    """Per partition: delivered ranges in order, which finished, and the offset to commit.

    A batch may span partitions; a rewind of one partition makes the later batches stale *on
    that partition* only (their answer still counts for their other partitions)."""

    def __init__(self) -> None:
        # Per partition, in offset order: [first, last, done, delivery id].
        self._ranges: dict[TopicPartition, list[list[int]]] = {}
        self._committable: dict[TopicPartition, int] = {}
        self._stale: set[tuple[int, TopicPartition]] = set()

    def delivered(self, delivery: Delivery) -> None:
        for tp, (first, last) in delivery.ranges.items():
            self._ranges.setdefault(tp, []).append([first, last, 0, delivery.id])

    def _current(self, delivery: Delivery) -> list[TopicPartition]:
        """The partitions on which ``delivery`` still counts (forgetting stale marks)."""
        current = []
        for tp in delivery.ranges:
            if (delivery.id, tp) in self._stale:
                self._stale.discard((delivery.id, tp))
            else:
                current.append(tp)
        return current

    def succeeded(self, delivery: Delivery) -> dict[TopicPartition, int]:
        """Mark ``delivery`` done; returns the partitions whose committable offset moved."""
        moved: dict[TopicPartition, int] = {}
        for tp in self._current(delivery):
            ranges = self._ranges.get(tp, [])
            for entry in ranges:
                if entry[3] == delivery.id:
                    entry[2] = 1
            while ranges and ranges[0][2]:
                _, last, _, _ = ranges.pop(0)
                self._committable[tp] = moved[tp] = last + 1
        return moved

    def failed(self, delivery: Delivery) -> dict[TopicPartition, int]:
        """``delivery`` failed: per partition, the offset to read again from. Later deliveries
        still out on those partitions become stale there (they come again after the rewind)."""
        rewind: dict[TopicPartition, int] = {}
        for tp in self._current(delivery):
            first = delivery.ranges[tp][0]
            kept = []
            for entry in self._ranges.get(tp, []):
                if entry[0] < first:
                    kept.append(entry)
                elif entry[3] != delivery.id:
                    self._stale.add((entry[3], tp))
            self._ranges[tp] = kept
            rewind[tp] = first
        return rewind

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Partitions revoked: their ranges go with them."""
        for tp in partitions:
            for entry in self._ranges.pop(tp, []):
                self._stale.add((entry[3], tp))
            self._committable.pop(tp, None)

    def committable(self) -> dict[TopicPartition, int]:
        return dict(self._committable)
