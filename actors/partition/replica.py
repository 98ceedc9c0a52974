"""The decisions of one partition replica, without Ray, I/O or a real clock.

``Replica`` holds what a replica believes about the partition — its role and leader epoch and,
as the leader, each follower's progress and the in-sync set — and answers the questions the
replication protocol asks:

* may a request from the leader of epoch E be served (or does it fence, or demote this
  replica)?
* where must a follower be truncated before it copies the leader (KIP-101 with KIP-279's fix:
  where the newest epoch both logs share ends, not the high watermark)?
* what is the high watermark (the lowest log end among the in-sync replicas; it never moves
  back)?
* which followers leave the ISR (no catch-up for ``replica.lag.time.max.ms``) or join it
  (caught up to the high watermark)?
* may an ``acks=all`` write be acknowledged (committed and still ``min.insync.replicas``)?

``PartitionActor`` is the shell that moves messages and awaits; the deterministic simulator
(``tests/sim``) drives the same class over a faulty simulated network.

The log is reached through ``ReplicaLog`` (``Partition`` in ``partition_core.py``; an in-memory
log in the simulator).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

from ray_broker.errors import FencedLeaderEpoch, NotLeader


class Role(str, enum.Enum):
    UNKNOWN = "unknown"  # just (re)started; asks the Controller
    LEADER = "leader"
    FOLLOWER = "follower"


class EpochHistory(Protocol):
    entries: list[tuple[int, int]]

    @property
    def latest_epoch(self) -> int: ...

    def end_offset_for(self, epoch: int, log_end_offset: int) -> int: ...


class ReplicaLog(Protocol):
    """What ``Replica`` reads of its log (``Partition`` implements it)."""

    high_watermark: int
    epochs: EpochHistory

    @property
    def log_end_offset(self) -> int: ...

    @property
    def log_start_offset(self) -> int: ...

    def become_leader(self, epoch: int) -> None: ...

    def advance_high_watermark(self, committed: int) -> bool: ...


@dataclass
class FollowerProgress:
    """The leader's view of one follower."""

    log_end_offset: int = -1  # unknown until the first answer
    caught_up_at: float = 0.0  # last time (clock units: seconds) it had all the leader had


class Replica:
    """Role, epoch, followers' progress, ISR and high watermark of one replica."""

    def __init__(self, slot: str, log: ReplicaLog, clock: Callable[[], float]) -> None:
        self.slot = slot
        self.log = log
        self.clock = clock
        self.role = Role.UNKNOWN
        self.leader_epoch = -1
        self.isr: set[str] = set()
        self.followers: dict[str, FollowerProgress] = {}
        # An ISR change sent to the Controller and not answered yet. Until it is, the high
        # watermark counts the *maximal* ISR (current ∪ pending), as Kafka's AlterPartition
        # does: a follower being added must not be left behind by a HW that advances while
        # the Controller records it, or it would join the ISR without a committed record.
        self.pending_isr: set[str] = set()
        self.pending_since: float | None = None

    @property
    def name(self) -> str:
        return getattr(self.log, "name", self.slot)

    # --- roles ------------------------------------------------------------------------------------

    def become_leader(self, epoch: int, replicas: Iterable[str], isr: Collection[str]) -> None:
        """Lead ``epoch`` (the Controller's order) with these replicas and in-sync slots.

        Raises:
            FencedLeaderEpoch: ``epoch`` is older than one this replica already follows.
        """
        self._take(Role.LEADER, epoch)
        self.log.become_leader(epoch)
        self.isr = set(isr) | {self.slot}
        now = self.clock()
        # A follower is given a full lag period from now to prove itself.
        self.followers = {s: FollowerProgress(caught_up_at=now) for s in replicas if s != self.slot}
        self.advance_high_watermark()

    def become_follower(self, epoch: int) -> None:
        """Follow the leader of ``epoch``. Raises FencedLeaderEpoch for an older epoch."""
        self._take(Role.FOLLOWER, epoch)

    def _take(self, role: Role, epoch: int) -> None:
        if epoch < self.leader_epoch:
            raise FencedLeaderEpoch(f"{self.name}: epoch {epoch} < {self.leader_epoch}")
        self.role = role
        self.leader_epoch = epoch
        self.isr = set()
        self.followers = {}
        self.isr_answered()

    def step_down(self, epoch: int) -> bool:
        """A newer leader exists (a follower or the Controller said so); True if this replica
        stopped leading."""
        was_leader = self.role == Role.LEADER
        if epoch > self.leader_epoch or was_leader:
            self.role = Role.FOLLOWER
            self.leader_epoch = max(self.leader_epoch, epoch)
            self.isr = set()
            self.followers = {}
        return was_leader

    def is_leading(self, epoch: int) -> bool:
        return self.role == Role.LEADER and self.leader_epoch == epoch

    def check_leader(self) -> None:
        """Raises NotLeader unless this replica leads."""
        if self.role != Role.LEADER:
            raise NotLeader(
                f"replica {self.slot} of {self.name} is not the leader (role "
                f"{self.role.value}, epoch {self.leader_epoch}); refresh metadata and retry",
                leader_epoch=self.leader_epoch,
            )

    def accept_leader(self, epoch: int) -> bool:
        """Check a request from the leader of ``epoch`` (replicate, truncate, epoch query);
        returns True if this replica stopped leading because of it.

        Raises:
            FencedLeaderEpoch: the sender is an old leader, or claims this replica's own epoch.
        """
        if epoch < self.leader_epoch:
            raise FencedLeaderEpoch(
                f"replica {self.slot} of {self.name} follows epoch {self.leader_epoch}; "
                f"a leader of epoch {epoch} is stale"
            )
        if self.role == Role.FOLLOWER and epoch == self.leader_epoch:
            return False
        if self.role == Role.LEADER and epoch == self.leader_epoch:
            raise FencedLeaderEpoch(f"two leaders claim epoch {epoch} of {self.name}")
        stepped_down = self.step_down(epoch)
        self.role = Role.FOLLOWER
        self.leader_epoch = epoch
        return stepped_down

    # --- leader: truncation, progress, high watermark ------------------------------------------

    def truncation_point(
        self, follower_epochs: list[tuple[int, int]], follower_end: int
    ) -> int | None:
        """Where a follower must be cut before it copies this leader; None if it continues.

        ``follower_epochs`` are the follower's (epoch, start offset) entries. Following KIP-279
        (which fixed KIP-101): find the newest epoch both logs share — the largest leader epoch
        not newer than the follower's latest — and cut where that epoch ends on *either* log.
        Cutting only where the follower's latest epoch ends on the leader keeps records a
        deposed leader wrote in an epoch the new leader never saw.
        """
        leader_epochs = self.log.epochs.entries
        follower_latest = follower_epochs[-1][0] if follower_epochs else -1
        common = max((e for e, _ in leader_epochs if e <= follower_latest), default=-1)
        leader_end = self.log.epochs.end_offset_for(follower_latest, self.log.log_end_offset)
        follower_common_end = next(
            (start for e, start in follower_epochs if e > common), follower_end
        )
        target = min(follower_end, leader_end, follower_common_end)
        if target == follower_end and follower_end >= self.log.log_start_offset:
            return None
        return target

    def on_follower_progress(self, slot: str, follower_end: int, leader_end_sent: int) -> bool:
        """A follower reports its log end after a push of the leader's log up to
        ``leader_end_sent``; returns True if the high watermark moved."""
        progress = self.followers.get(slot)
        if progress is None:
            return False
        progress.log_end_offset = follower_end
        if follower_end >= leader_end_sent:
            progress.caught_up_at = self.clock()
        return self.advance_high_watermark()

    def mark_caught_up(self, slot: str) -> None:
        """The follower has everything the leader has (an idle push found nothing to send)."""
        progress = self.followers.get(slot)
        if progress is not None and progress.log_end_offset >= self.log.log_end_offset:
            progress.caught_up_at = self.clock()

    def high_watermark_target(self) -> int:
        """The lowest log end among the in-sync replicas, this leader included."""
        ends = [self.log.log_end_offset]
        for slot in self.isr | self.pending_isr:
            if slot != self.slot:
                progress = self.followers.get(slot)
                ends.append(progress.log_end_offset if progress is not None else -1)
        return min(ends)

    def advance_high_watermark(self) -> bool:
        """Raise the high watermark as far as the ISR allows (never down); True if it moved."""
        if self.role != Role.LEADER:
            return False
        return self.log.advance_high_watermark(self.high_watermark_target())

    def follower_high_watermark(self, leader_high_watermark: int) -> bool:
        """A follower learns the leader's high watermark; it never passes its own log end."""
        return self.log.advance_high_watermark(min(leader_high_watermark, self.log.log_end_offset))

    # --- leader: ISR ------------------------------------------------------------------------------

    def isr_proposal(self, lag_time_max_s: float, answer_timeout_s: float) -> set[str] | None:
        """The in-sync set to ask the Controller for, or None (unchanged, or a proposal is
        still unanswered). The proposal is pending until ``apply_isr`` or ``isr_answered``;
        an unanswered one is given up after ``answer_timeout_s``.

        A follower leaves after ``lag_time_max_s`` without catching up; it joins when it has
        reached the high watermark and caught up recently.
        """
        if self.role != Role.LEADER:
            return None
        now = self.clock()
        if self.pending_since is not None:
            if now - self.pending_since < answer_timeout_s:
                return None
            self.isr_answered()
        isr = set(self.isr)
        for slot, progress in self.followers.items():
            lagging = now - progress.caught_up_at > lag_time_max_s
            if slot in isr and lagging:
                isr.discard(slot)
            elif (
                slot not in isr
                and not lagging
                and progress.log_end_offset >= self.log.high_watermark
            ):
                isr.add(slot)
        if isr == self.isr:
            return None
        self.pending_isr = isr - self.isr
        self.pending_since = now
        return isr

    def isr_answered(self) -> None:
        """The pending proposal was refused or lost: the HW counts the current ISR again."""
        self.pending_isr = set()
        self.pending_since = None

    def apply_isr(self, epoch: int, accepted: Collection[str]) -> bool:
        """The Controller recorded ``accepted`` for ``epoch``; True if applied (still leader)."""
        if not self.is_leading(epoch):
            return False
        self.isr_answered()
        self.isr = set(accepted) | {self.slot}
        self.advance_high_watermark()
        return True

    def enough_replicas(self, min_insync_replicas: int) -> bool:
        return len(self.isr) >= min_insync_replicas
