"""A partition's replica set, leader, leader epoch and in-sync replicas, with the Controller's
rules for changing them (no Ray here).

Replicas are *slots* (``r0``, ``r1``, …): a slot is one copy of the partition, pinned to a Ray
node and stored under its own directory. When a node dies its slots are replaced by new slots on
other live nodes, which copy the log from the leader. The first slot is the preferred leader.

Every leadership change bumps the leader epoch, which fences the old leader: followers refuse
its writes, so a zombie cannot get a write acknowledged by ``acks=all``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from ray_broker.errors import FencedLeaderEpoch


@dataclass
class PartitionState:
    replicas: list[str]  # slots; the first is the preferred leader
    nodes: dict[str, str]  # slot -> Ray node id
    leader: str | None
    epoch: int = 0
    isr: list[str] = field(default_factory=list)
    next_slot: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartitionState:
        return cls(**data)

    @classmethod
    def placed(cls, nodes: list[str]) -> PartitionState:
        slots = [f"r{i}" for i in range(len(nodes))]
        return cls(
            replicas=slots,
            nodes=dict(zip(slots, nodes, strict=True)),
            leader=slots[0],
            epoch=0,
            isr=list(slots),
            next_slot=len(slots),
        )

    def elect(self, alive: Collection[str], unclean: bool) -> bool:
        """Choose a leader among live in-sync replicas (preferred order); returns True if the
        leader changed (and the epoch was bumped). With none, the partition goes offline unless
        ``unclean`` allows an out-of-sync replica (which may lose committed records)."""
        candidates = [s for s in self.replicas if s in alive and s in self.isr]
        if not candidates and unclean:
            candidates = [s for s in self.replicas if s in alive]
        leader = candidates[0] if candidates else None
        if leader == self.leader:
            return False  # unchanged (still offline, or the same live leader)
        self.leader = leader
        self.epoch += 1
        if leader is not None and leader not in self.isr:
            self.isr = [leader]  # unclean: the new leader's log is the truth now
        return True

    def remove_slot(self, slot: str) -> None:
        self.replicas = [s for s in self.replicas if s != slot]
        self.isr = [s for s in self.isr if s != slot]
        self.nodes.pop(slot, None)
        if self.leader == slot:
            self.leader = None

    def add_slot(self, node: str) -> str:
        slot = f"r{self.next_slot}"
        self.next_slot += 1
        self.replicas.append(slot)
        self.nodes[slot] = node
        return slot

    def prefer(self, alive: Collection[str]) -> bool:
        """Move leadership back to the preferred replica when it is alive and in sync."""
        preferred = self.replicas[0] if self.replicas else None
        if preferred is None or preferred == self.leader or preferred not in alive:
            return False
        if preferred not in self.isr:
            return False
        self.leader = preferred
        self.epoch += 1
        return True

    def alter_isr(self, epoch: int, isr: Collection[str]) -> bool:
        """The leader of ``epoch`` reports its in-sync set; returns True if the state changed.

        Only known replicas count and the leader always stays in.

        Raises:
            FencedLeaderEpoch: ``epoch`` is not the current one (a deposed leader).
        """
        if epoch != self.epoch:
            raise FencedLeaderEpoch(f"ISR change from epoch {epoch}, current {self.epoch}")
        wanted = [s for s in self.replicas if s in set(isr)]
        if self.leader is not None and self.leader not in wanted:
            wanted.insert(0, self.leader)
        if wanted == self.isr:
            return False
        self.isr = wanted
        return True
