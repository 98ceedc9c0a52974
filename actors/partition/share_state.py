"""Share-partition state (Kafka's KIP-932): which records of one partition a share group has
handed out, to whom, how often, and which are done. The decisions only — a plain class fed with
offsets and a clock; the partition actor reads the log, persists snapshots and writes dead
letters (``actors/partition/share_groups.py``).

The window: offsets in ``[start_offset, end_offset)`` are tracked; everything below
``start_offset`` is finished (accepted or archived), nothing at or past ``end_offset`` has been
delivered yet. The leader admits records into the window as it reads them (at most
``max_inflight`` offsets past ``start_offset``, Kafka's ``group.share.partition.max.record.locks``),
hands AVAILABLE ones out under a time lock (ACQUIRED, delivery count + 1) and applies the
members' answers: ACCEPT finishes a record, RELEASE makes it AVAILABLE again (after
``release_backoff_ms``), REJECT — or a release or lock expiry at ``delivery_count_limit`` —
sends it to the dead-letter topic (DEAD_LETTERING until the copy is written, then ARCHIVED).
``start_offset`` moves past the finished prefix, so the window slides as records are done.

Priorities (``priority.levels`` > 1): available records are handed out highest priority first,
oldest first within a level. Starvation rule: the ``fifo_every``-th delivery (counting from the
last one that took the oldest available record) takes the oldest available record whatever its
priority, so low priorities get at least one delivery in ``fifo_every`` under any load of higher
ones.

Snapshots (``snapshot()``/``restore()``) are small JSON documents: the start offset, runs of
finished offsets, delivery counts, dead letters not yet written and the dead-letter producer's
sequence. Locks are not saved: after a leader change or restart an ACQUIRED record is AVAILABLE
again with its count kept, as Kafka does — a member's ack of it then fails with
``InvalidRecordState`` and the record is delivered again.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ray_broker.structs import AcknowledgeType

SNAPSHOT_VERSION = 2
# A member not seen for this long is no longer listed (its locks expire on their own).
MEMBER_LISTED_MS = 45_000


class State(IntEnum):
    AVAILABLE = 0
    ACQUIRED = 1
    ACKNOWLEDGED = 2
    ARCHIVED = 3
    DEAD_LETTERING = 4  # archived; its copy in the dead-letter topic is not written yet


FINISHED = (State.ACKNOWLEDGED, State.ARCHIVED)


@dataclass(slots=True)
class Delivery:
    state: State = State.AVAILABLE
    count: int = 0
    priority: int = 0
    member: str | None = None
    # ACQUIRED: when the lock ends; AVAILABLE: not before (a release's back-off).
    deadline_ms: int = 0
    reason: str | None = None  # why it is dead-lettered
    error: str | None = None  # the member's last error text, for the dead letter's headers


@dataclass(frozen=True)
class ShareSettings:
    lock_duration_ms: int = 30_000
    delivery_count_limit: int = 5
    max_inflight: int = 5_000
    fifo_every: int = 10
    release_backoff_ms: int = 0
    dead_letters: bool = True  # False: rejected records are archived without a copy
    prioritized: bool = False  # the topic has priority levels (the slower, ordering path)


@dataclass(frozen=True, slots=True)
class Acquired:
    offset: int
    delivery_count: int


class SharePartition:
    """See the module docstring. ``version`` counts changes that a snapshot must capture."""

    def __init__(self, settings: ShareSettings, start_offset: int = 0) -> None:
        self.settings = settings
        self.start_offset = start_offset
        self.end_offset = start_offset
        self.records: dict[int, Delivery] = {}  # insertion order is offset order
        self.members: dict[str, int] = {}  # member id -> last seen (ms)
        self.version = 0
        self.dead_lettered = 0
        self.dlq_producer_id: int | None = None
        self.dlq_next_sequence = 0
        self.dlq_batch: list[int] | None = None  # being written from dlq_next_sequence on
        self._since_oldest = 0
        self._next_expiry: int | None = None
        # Without priorities, records never delivered are only offsets (a Delivery is made on
        # first delivery): ``_fresh`` in offset order; ``_available`` is a heap of delivered
        # records that are AVAILABLE again (all older than the fresh ones), checked lazily.
        self._fresh: deque[int] = deque()
        self._available: list[int] = []
        self._dead: set[int] = set()  # DEAD_LETTERING offsets
        # From a snapshot, consulted as the window is read again.
        self._finished_runs: deque[tuple[int, int]] = deque()
        self._restored: dict[int, Delivery] = {}

    # --- the window -----------------------------------------------------------------------------

    def room(self) -> int:
        """How many more offsets may enter the window."""
        return max(self.settings.max_inflight - (self.end_offset - self.start_offset), 0)

    def admit(
        self, offsets: Sequence[int], priorities: Sequence[int] | None, next_offset: int
    ) -> None:
        """Records read from the log at ``end_offset`` (up to ``next_offset``; offsets the read
        hid — control records, aborted transactions — are absent and count as finished)."""
        assert not offsets or offsets[0] >= self.end_offset, "admitted twice"
        records = self.records
        if not self._finished_runs and not self._restored and not self.settings.prioritized:
            self._fresh.extend(offsets)  # the common case, kept lean
            offsets = ()
        for index, offset in enumerate(offsets):
            if self._finished_before(offset):
                # Tracked until the start passes it, so the next snapshot still says so.
                records[offset] = Delivery(State.ACKNOWLEDGED)
                continue
            delivery = self._restored.pop(offset, None)
            if delivery is None and not self.settings.prioritized:
                self._fresh.append(offset)
                continue
            delivery = delivery or Delivery()
            delivery.priority = priorities[index] if priorities is not None else 0
            records[offset] = delivery
            if delivery.state == State.DEAD_LETTERING:
                self._dead.add(offset)
            elif not self.settings.prioritized:
                heapq.heappush(self._available, offset)
        self.end_offset = max(self.end_offset, next_offset)
        self._advance()

    def skip_to(self, offset: int) -> None:
        """The log no longer has records below ``offset`` (retention): they are finished."""
        if offset <= self.start_offset:
            return
        for gone in [o for o in self.records if o < offset]:
            del self.records[gone]
        while self._fresh and self._fresh[0] < offset:
            self._fresh.popleft()
        self._dead = {o for o in self._dead if o >= offset}
        self.start_offset = offset
        self.end_offset = max(self.end_offset, offset)
        self.version += 1

    def _finished_before(self, offset: int) -> bool:
        runs = self._finished_runs
        while runs and runs[0][1] < offset:
            runs.popleft()
        return bool(runs) and runs[0][0] <= offset

    def _advance(self) -> None:
        records, fresh = self.records, self._fresh
        while self.start_offset < self.end_offset:
            delivery = records.get(self.start_offset)
            if delivery is None:
                if fresh and fresh[0] == self.start_offset:
                    break  # never delivered yet
            elif delivery.state not in FINISHED:
                break
            else:
                del records[self.start_offset]
            self.start_offset += 1

    # --- delivery -------------------------------------------------------------------------------

    def acquire(self, member: str, max_records: int, now_ms: int) -> list[Acquired]:
        """Lock up to ``max_records`` available records for ``member``."""
        self.members[member] = now_ms
        if self.settings.prioritized:
            candidates = [
                (offset, delivery)
                for offset, delivery in self.records.items()
                if delivery.state == State.AVAILABLE and delivery.deadline_ms <= now_ms
            ]
            picked = self._pick(candidates, max_records) if candidates else []
        else:
            picked = self._oldest(max_records, now_ms)
        if not picked:
            return []
        deadline = now_ms + self.settings.lock_duration_ms
        acquired = State.ACQUIRED
        out = []
        for offset, delivery in picked:
            delivery.state = acquired
            delivery.count += 1
            delivery.member = member
            delivery.deadline_ms = deadline
            out.append(Acquired(offset, delivery.count))
        if self._next_expiry is None or deadline < self._next_expiry:
            self._next_expiry = deadline
        self.version += 1
        return out

    def _oldest(self, limit: int, now_ms: int) -> list[tuple[int, Delivery]]:
        """Without priorities: delivered-and-available records first (they are the oldest),
        then fresh ones, in offset order."""
        picked: list[tuple[int, Delivery]] = []
        heap, records, waiting = self._available, self.records, []
        while heap and len(picked) < limit:
            offset = heapq.heappop(heap)
            delivery = records.get(offset)
            if delivery is None or delivery.state != State.AVAILABLE:
                continue  # stale: acquired or finished since it was pushed
            if delivery.deadline_ms > now_ms:
                waiting.append(offset)  # a release's back-off
                continue
            picked.append((offset, delivery))
        for offset in waiting:
            heapq.heappush(heap, offset)
        fresh = self._fresh
        while fresh and len(picked) < limit:
            offset = fresh.popleft()
            delivery = records[offset] = Delivery()
            picked.append((offset, delivery))
        return picked

    def _pick(
        self, available: list[tuple[int, Delivery]], limit: int
    ) -> list[tuple[int, Delivery]]:
        by_priority = sorted(available, key=lambda item: (-item[1].priority, item[0]))
        taken: set[int] = set()
        picked = []
        oldest = urgent = 0
        while len(picked) < limit and len(picked) < len(available):
            while available[oldest][0] in taken:
                oldest += 1
            while by_priority[urgent][0] in taken:
                urgent += 1
            self._since_oldest += 1
            if self._since_oldest >= self.settings.fifo_every:
                choice = available[oldest]
            else:
                choice = by_priority[urgent]
            if choice[0] == available[oldest][0]:
                self._since_oldest = 0
            taken.add(choice[0])
            picked.append(choice)
        return picked

    def acknowledge(
        self,
        member: str,
        offsets: Sequence[int],
        kind: AcknowledgeType,
        now_ms: int,
        error: str | None = None,
    ) -> list[int]:
        """Apply one answer to several records; returns the offsets it could not apply (not
        held by ``member`` under a live lock). The others are applied."""
        self.members[member] = now_ms
        failed = []
        records, acquired, accept = self.records, State.ACQUIRED, kind == AcknowledgeType.ACCEPT
        for offset in offsets:
            delivery = records.get(offset)
            if (
                delivery is None
                or delivery.state != acquired
                or delivery.member != member
                or delivery.deadline_ms < now_ms
            ):
                failed.append(offset)
                continue
            delivery.member = None
            if accept:
                delivery.state = State.ACKNOWLEDGED
            elif kind == AcknowledgeType.RELEASE:
                self._release(offset, delivery, now_ms, error)
            else:
                self._dead_letter(offset, delivery, "rejected", error)
        self._advance()
        self.version += 1
        return failed

    def _release(self, offset: int, delivery: Delivery, now_ms: int, error: str | None) -> None:
        delivery.member = None
        if delivery.count >= self.settings.delivery_count_limit:
            self._dead_letter(offset, delivery, "delivery.count.limit", error)
        else:
            delivery.state = State.AVAILABLE
            delivery.deadline_ms = now_ms + self.settings.release_backoff_ms
            if not self.settings.prioritized:
                heapq.heappush(self._available, offset)

    def _dead_letter(self, offset: int, delivery: Delivery, reason: str, error: str | None) -> None:
        delivery.state = State.DEAD_LETTERING if self.settings.dead_letters else State.ARCHIVED
        if self.settings.dead_letters:
            self._dead.add(offset)
        delivery.reason = reason
        delivery.error = error

    def expire(self, now_ms: int) -> bool:
        """Locks that ran out: their records are available again (or dead-lettered at the
        delivery count limit). Returns whether any did."""
        if self._next_expiry is None or now_ms < self._next_expiry:
            return False
        expired = False
        next_expiry = None
        for offset, delivery in self.records.items():
            if delivery.state != State.ACQUIRED:
                continue
            if delivery.deadline_ms < now_ms:
                self._release(offset, delivery, now_ms, "acquisition lock expired")
                expired = True
            elif next_expiry is None or delivery.deadline_ms < next_expiry:
                next_expiry = delivery.deadline_ms
        self._next_expiry = next_expiry
        if expired:
            self._advance()
            self.version += 1
        return expired

    def next_change_ms(self) -> int | None:
        """When a lock ends or a released record becomes available (for long polls)."""
        times = [
            d.deadline_ms
            for d in self.records.values()
            if d.state in (State.ACQUIRED, State.AVAILABLE) and d.deadline_ms
        ]
        return min(times) if times else None

    # --- dead letters ---------------------------------------------------------------------------

    def dead_letters(self, limit: int) -> list[tuple[int, Delivery]]:
        """Records waiting for their dead-letter copy, oldest first."""
        if not self._dead:
            return []
        return [(offset, self.records[offset]) for offset in sorted(self._dead)[:limit]]

    def delivery_of(self, offset: int) -> Delivery:
        """What is known of a record's deliveries (held now, or restored from a snapshot)."""
        return self.records.get(offset) or self._restored.get(offset) or Delivery()

    def begin_dead_letter_batch(self, offsets: list[int], producer_id: int) -> int:
        """Fix the batch (and its sequence) before writing it: saved in the snapshot, a write
        repeated after a crash carries the same producer id and sequence, and the dead-letter
        partition's idempotence drops the copy. Returns the base sequence."""
        assert self.dlq_batch is None, "one dead-letter batch at a time"
        self.dlq_producer_id = self.dlq_producer_id or producer_id
        self.dlq_batch = list(offsets)
        self.version += 1
        return self.dlq_next_sequence

    def dead_letter_batch_written(self) -> None:
        assert self.dlq_batch is not None
        for offset in self.dlq_batch:
            self._dead.discard(offset)
            delivery = self.records.get(offset)
            if delivery is not None:
                delivery.state = State.ARCHIVED
        self.dlq_next_sequence += len(self.dlq_batch)
        self.dead_lettered += len(self.dlq_batch)
        self.dlq_batch = None
        self._advance()
        self.version += 1

    # --- administration -------------------------------------------------------------------------

    def reset(self, offset: int) -> None:
        """Start over at ``offset``: nothing in flight, nothing finished past it."""
        self.records.clear()
        self._fresh.clear()
        self._available.clear()
        self._dead.clear()
        self._restored.clear()
        self._finished_runs.clear()
        self.start_offset = self.end_offset = offset
        self.dlq_batch = None
        self._next_expiry = None
        self.version += 1

    def active_members(self, now_ms: int) -> list[str]:
        return sorted(m for m, seen in self.members.items() if now_ms - seen <= MEMBER_LISTED_MS)

    def describe(self, high_watermark: int, now_ms: int) -> dict[str, Any]:
        states = {state.name.lower(): 0 for state in State}
        finished = 0
        for delivery in self.records.values():
            states[delivery.state.name.lower()] += 1
            finished += delivery.state in FINISHED
        states["available"] += len(self._fresh)
        lag = max(high_watermark - self.start_offset - finished, 0)
        return {
            "start_offset": self.start_offset,
            "end_offset": self.end_offset,
            "in_flight": states["acquired"],
            "available": states["available"],
            "dead_lettering": states["dead_lettering"],
            "dead_lettered": self.dead_lettered,
            "lag": lag,
            "members": self.active_members(now_ms),
        }

    # --- snapshots ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        runs: list[list[int]] = []
        counts: list[list[int]] = []
        dead: list[list[Any]] = []
        for offset, delivery in self.records.items():
            if delivery.state in FINISHED:
                if runs and runs[-1][1] == offset - 1:
                    runs[-1][1] = offset
                else:
                    runs.append([offset, offset])
            elif delivery.state == State.DEAD_LETTERING:
                dead.append([offset, delivery.count, delivery.reason, delivery.error])
            elif delivery.count:
                if counts and counts[-1][1] == offset - 1 and counts[-1][2] == delivery.count:
                    counts[-1][1] = offset
                else:
                    counts.append([offset, offset, delivery.count])
        # Restored state the window has not read back yet (all of it past end_offset).
        runs.extend([a, b] for a, b in self._finished_runs)
        for offset, delivery in sorted(self._restored.items()):
            if delivery.state == State.DEAD_LETTERING:
                dead.append([offset, delivery.count, delivery.reason, delivery.error])
            else:
                counts.append([offset, offset, delivery.count])
        return {
            "v": SNAPSHOT_VERSION,
            "start": self.start_offset,
            "finished": runs,
            "counts": counts,
            "dead": dead,
            "dlq": [self.dlq_producer_id, self.dlq_next_sequence, self.dlq_batch],
            "dead_lettered": self.dead_lettered,
        }

    @classmethod
    def restore(cls, settings: ShareSettings, document: dict[str, Any]) -> SharePartition:
        if document.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unknown share-state snapshot version {document.get('v')!r}")
        state = cls(settings, int(document["start"]))
        state._finished_runs = deque((int(a), int(b)) for a, b in document["finished"])
        for first, last, count in document["counts"]:
            for offset in range(int(first), int(last) + 1):
                state._restored[int(offset)] = Delivery(count=int(count))
        for offset, count, reason, error in document["dead"]:
            state._restored[int(offset)] = Delivery(
                State.DEAD_LETTERING, int(count), reason=reason, error=error
            )
        producer_id, sequence, batch = document["dlq"]
        state.dlq_producer_id, state.dlq_next_sequence, state.dlq_batch = (
            producer_id,
            sequence,
            batch,
        )
        state.dead_lettered = int(document.get("dead_lettered", 0))
        return state
