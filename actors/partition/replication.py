"""The leader's replication to one follower, as decisions without I/O: which request goes next
and what each answer means.

A leader keeps one ``FollowerSender`` per follower and one request in flight to it (Ray does
not order an async actor's calls, and a simulated network reorders everything). The shell that
owns the transport asks ``next_request()``, sends it, and hands the answer back:

* ``EpochQuery`` first, and again whenever the follower's log may have moved (its restart, a
  refused push, any failed call): the follower answers with its leader-epoch entries and log
  end, and ``on_epoch_state`` says where to cut it (KIP-101 with KIP-279's fix, decided by
  ``Replica.truncation_point``) — a ``Truncate`` to send, or nothing when it continues as is;
* then ``Push``: the leader's records from the follower's log end, its epoch entries and high
  watermark; an empty push is the heartbeat an idle follower gets (it carries the high
  watermark and keeps the follower's lag clock fresh).

A follower counts as caught up when it holds everything the leader had *when the push was
built* — Kafka's rule for ``replica.lag.time.max.ms``. A follower copying a long backlog in
capped pushes is therefore not caught up until the last of them; the in-sync set and the high
watermark follow from that (``Replica``).

``PartitionActor`` drives this class over Ray calls (``replication_links.py``); the seeded
simulator (``tests/sim/world.py``) drives the same class over a faulty simulated network, so
the sender that ships is the sender that is simulated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray_broker.actors.partition.replica import Replica


@dataclass(frozen=True)
class EpochQuery:
    """Ask the follower for its leader-epoch entries and log end."""

    epoch: int


@dataclass(frozen=True)
class Truncate:
    """Cut the follower's log at ``offset`` (or restart it at ``leader_log_start`` when it is
    behind that); ``expected_end`` is the log end the cut was computed from, so a late,
    repeated request cuts nothing."""

    epoch: int
    offset: int
    leader_log_start: int
    expected_end: int


@dataclass(frozen=True)
class Push:
    """The leader's records from ``start`` (``records`` is what the log's reader returned, or
    None for a heartbeat), its epoch entries and high watermark; ``leader_end`` is the
    leader's log end when the push was built."""

    epoch: int
    start: int
    records: Any
    epochs: list[tuple[int, int]]
    high_watermark: int
    leader_end: int


Request = EpochQuery | Truncate | Push


class FollowerSender:
    """One follower's replication within one leader epoch (a new epoch gets new senders).

    ``read(offset, max_records)`` returns the leader's records from ``offset`` (None or an
    empty batch when there are none; ``count`` says how many a result holds), and
    ``high_watermark_moved(moved)`` is told after every answer that may move the high
    watermark, so the shell can wake ``acks=all`` waiters and consumers.
    """

    def __init__(
        self,
        replica: Replica,
        slot: str,
        read: Callable[[int, int], Any],
        count: Callable[[Any], int],
        high_watermark_moved: Callable[[bool], None],
        batch_records: int,
    ) -> None:
        self.replica = replica
        self.slot = slot
        self.epoch = replica.leader_epoch
        self.synced = False  # the follower's log continues the leader's (epochs compared)
        self._read = read
        self._count = count
        self._moved = high_watermark_moved
        self._batch_records = batch_records

    @property
    def active(self) -> bool:
        """Whether this replica still leads the epoch the sender was made for."""
        return self.replica.is_leading(self.epoch)

    def next_request(self, *, heartbeat: bool = False) -> EpochQuery | Push | None:
        """The request to send now; None when the follower has everything (wait for new
        records, then ask again with ``heartbeat=True`` to send at least an empty push)."""
        if not self.active:
            return None
        if not self.synced:
            return EpochQuery(self.epoch)
        progress = self.replica.followers.get(self.slot)
        if progress is None:
            return None
        log = self.replica.log
        leader_end = log.log_end_offset
        if progress.log_end_offset >= leader_end:
            self.replica.mark_caught_up(self.slot)
            if not heartbeat:
                return None
        records = None
        if progress.log_end_offset < leader_end:
            records = self._read(progress.log_end_offset, self._batch_records)
            if records is not None and not self._count(records):
                records = None
        return Push(
            self.epoch,
            progress.log_end_offset,
            records,
            list(log.epochs.entries),
            log.high_watermark,
            leader_end,
        )

    def on_epoch_state(
        self, follower_epochs: list[tuple[int, int]], follower_end: int
    ) -> Truncate | None:
        """The follower's answer to ``EpochQuery``: the cut to send, or None (it continues,
        and pushes follow)."""
        if not self.active:
            return None
        target = self.replica.truncation_point(follower_epochs, follower_end)
        if target is None:
            self._synced_at(follower_end)
            return None
        return Truncate(self.epoch, target, self.replica.log.log_start_offset, follower_end)

    def on_truncated(self, follower_end: int) -> None:
        """The follower's log end after the cut."""
        if self.active:
            self._synced_at(follower_end)

    def on_pushed(self, push: Push, follower_end: int) -> None:
        """The follower's log end after ``push``."""
        if self.active:
            self._moved(self.replica.on_follower_progress(self.slot, follower_end, push.leader_end))

    def on_log_moved(self) -> None:
        """The follower refused a request because its log changed (it restarted, or a cut
        raced a push), or a call failed: compare epochs again before the next push."""
        self.synced = False

    def on_fenced(self) -> bool:
        """The follower knows a newer leader: this replica steps down. True if it was leading."""
        return self.replica.step_down(self.epoch + 1)

    def _synced_at(self, follower_end: int) -> None:
        self.synced = True
        leader_end = self.replica.log.log_end_offset
        self._moved(self.replica.on_follower_progress(self.slot, follower_end, leader_end))
