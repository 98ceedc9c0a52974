"""The share groups of one partition leader: the I/O around ``SharePartition``.

Per share group reading this partition the leader keeps one ``SharePartition`` (loaded from the
group coordinator when it first serves the group in a leader epoch), fills its window from the
log (``read_committed``: a share group never sees aborted or open transactions), hands records
out, and saves a snapshot to the group coordinator after every change a member waits for
(acknowledgements are durable when answered; acquisitions are saved with the next write).

Dead letters: rejected and over-delivered records are copied to the group's dead-letter topic
by one background task per group. The batch and its producer sequence are saved before the
write, so a repeat after any crash is the same idempotent batch and the dead-letter partition
drops it — the copy is written once, and the record is archived only after it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_broker._ray import await_ref, submit
from ray_broker.actors.partition.arguments import check_acknowledgements
from ray_broker.actors.partition.core import Partition
from ray_broker.actors.partition.dead_letter_rows import dead_letter_rows
from ray_broker.actors.partition.message_trace import traced_rows
from ray_broker.actors.partition.named_actors import NamedActors
from ray_broker.actors.partition.replica import Replica
from ray_broker.actors.partition.share_state import SharePartition, ShareSettings, State
from ray_broker.actors.partition.signals import PartitionSignals
from ray_broker.actors.partition.trace_shipper import TraceShipper
from ray_broker.config import (
    GROUP_COORDINATOR_NAME,
    TRANSACTIONAL_ID_SPACE,
    TopicConfig,
    dead_letter_topic,
    validate_group_id,
)
from ray_broker.errors import (
    GroupNotEmpty,
    InvalidConfig,
    TopicExists,
)
from ray_broker.gc_pause import collector_paused
from ray_broker.storage.ipc import to_ipc
from ray_broker.storage.log import wall_clock_ms
from ray_broker.storage.record_filter import RecordFilter, checked_filter
from ray_broker.structs import AcknowledgeType, FetchResponse

logger = logging.getLogger(__name__)

COORDINATOR_CALL_TIMEOUT_S = 30.0
DEAD_LETTER_BATCH_RECORDS = 1_000
DEAD_LETTER_RETRY_S = 0.5
PRIORITY_MASK = 0x0F  # the low bits of ``attributes`` hold a record's priority
SHARE_FETCH_MAX_RECORDS = 10_000


def settings_of(config: TopicConfig) -> ShareSettings:
    return ShareSettings(
        lock_duration_ms=config.share_record_lock_duration_ms,
        delivery_count_limit=config.share_delivery_count_limit,
        max_inflight=config.share_partition_max_record_locks,
        fifo_every=config.priority_fifo_every,
        release_backoff_ms=config.share_release_backoff_ms,
        dead_letters=bool(config.share_dlq_topic),
        prioritized=config.priority_levels > 1,
    )


_ANSWERED = {
    AcknowledgeType.ACCEPT: "accepted",
    AcknowledgeType.RELEASE: "released",
    AcknowledgeType.REJECT: "rejected",
}


class ShareGroups:
    """See the module docstring. Lives inside a ``PartitionActor`` and uses its log, leader
    state and wake-ups; state is dropped whenever the replica stops leading.

    ``named`` calls the group coordinator (where snapshots are kept); ``controller`` creates
    dead-letter topics and finds their leaders; ``fetch_wait_cap_ms`` caps a long poll.
    """

    def __init__(
        self,
        core: Partition,
        replica: Replica,
        signals: PartitionSignals,
        traces: TraceShipper,
        named: NamedActors,
        controller: Any,
        fetch_wait_cap_ms: int,
    ) -> None:
        self.core = core
        self.replica = replica
        self.signals = signals
        self.traces = traces
        self._named = named
        self._controller = controller
        self._fetch_wait_cap_ms = fetch_wait_cap_ms
        self.groups: dict[str, SharePartition] = {}
        self.filters: dict[str, RecordFilter | None] = {}
        self._epoch = -1
        self._saved: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}
        self._coordinator: Any = None
        self._dlq_leaders: dict[str, Any] = {}
        self._epoch_lock = asyncio.Lock()

    def clear(self) -> None:
        """Forget everything (this replica stopped leading; the next leader loads it)."""
        for group in list(self.groups):
            self._drop(group)

    # --- state ----------------------------------------------------------------------------------

    async def _coordinator_call(self, method: str, *args: Any) -> Any:
        return await self._named.call(
            GROUP_COORDINATOR_NAME, method, *args, timeout_s=COORDINATOR_CALL_TIMEOUT_S
        )

    async def state(self, group: str, reset: str = "latest") -> SharePartition:
        """The group's state in this leader epoch, loaded (or started at ``reset``) once."""
        epoch = self.replica.leader_epoch
        if epoch != self._epoch:
            await self._change_epoch(epoch)
        found = self.groups.get(group)
        if found is not None:
            return found
        settings = settings_of(self.core.log.config)
        _, document = await self._load(group, epoch)
        if group in self.groups:  # loaded by a concurrent call meanwhile
            return self.groups[group]
        if document is None:
            offsets = self.core.offsets()
            start = offsets.high_watermark if reset == "latest" else offsets.log_start_offset
            share = SharePartition(settings, start)
        else:
            share = SharePartition.restore(settings, document)
        self.groups[group] = share
        self._saved[group] = -1
        self._fill(group, share)
        await self.save(group)
        if share.dlq_batch or share.dead_letters(1):
            self._start_writer(group)
        return share

    async def _load(self, group: str, epoch: int) -> tuple[int, dict[str, Any] | None]:
        held_by, document = await self._coordinator_call(
            "share_load", group, self.core.topic, self.core.partition, epoch
        )
        self.replica.check_leader()
        return held_by, document

    async def _change_epoch(self, epoch: int) -> None:
        """A new leader epoch: keep a group's state (and its members' locks) only if this
        replica's previous epoch was the last to hold it — it led on without a gap; otherwise
        another leader may have changed it, and it is loaded again."""
        async with self._epoch_lock:
            if epoch == self._epoch:
                return
            previous = self._epoch
            try:
                for group in list(self.groups):
                    held_by, _ = await self._load(group, epoch)
                    if held_by != previous:
                        self._drop(group)
            except BaseException:
                for group in list(self.groups):  # unknown: load each again when next used
                    self._drop(group)
                raise
            finally:
                self._epoch = epoch

    def _drop(self, group: str) -> None:
        self.groups.pop(group, None)
        self._saved.pop(group, None)
        writer = self._writers.pop(group, None)
        if writer is not None:
            writer.cancel()

    def update_settings(self) -> None:
        """A topic config change; switching priorities on or off reloads the groups from
        their last save (their locks are lost: those records are delivered again)."""
        settings = settings_of(self.core.log.config)
        for group, share in list(self.groups.items()):
            if share.settings.prioritized != settings.prioritized:
                self._drop(group)
            else:
                share.settings = settings

    async def save(self, group: str) -> None:
        """Durably save the group's snapshot (at least as new as now); concurrent callers
        share one write."""
        share = self.groups.get(group)
        if share is None:
            return
        target = share.version
        lock = self._locks.setdefault(group, asyncio.Lock())
        async with lock:
            if self._saved.get(group, -1) >= target or self.groups.get(group) is not share:
                return
            version = share.version
            await self._coordinator_call(
                "share_save",
                group,
                self.core.topic,
                self.core.partition,
                self._epoch,
                share.snapshot(),
            )
            self._saved[group] = version

    def _fill(self, group: str, share: SharePartition) -> None:
        """Read records past the window's end into it (as many as it has room for). Records
        the group's filter does not match are finished for the group without a delivery (as
        in RocketMQ: a group's subscription decides what it consumes)."""
        log_start = self.core.log.log_start_offset
        if share.start_offset < log_start:
            share.skip_to(log_start)  # retention deleted records nobody finished
        room = share.room()
        limit = self.core.last_stable_offset
        if room <= 0 or share.end_offset >= min(limit, self.core.log.log_end_offset):
            return  # nothing new (or the log was truncated below the window by an election)
        table, next_offset = self.core.read_with_next(
            share.end_offset,
            room,
            64 * 1024 * 1024,
            read_committed=True,
            flt=self.filters.get(group),
            max_examined=room,  # the window spans offsets, matching or not
        )
        offsets = table.column("offset").to_pylist()
        priorities = None
        if self.core.log.config.priority_levels > 1 and table.num_rows:
            attributes = pc.fill_null(table.column("attributes"), 0).to_numpy()
            priorities = (attributes.astype(np.int16) & PRIORITY_MASK).tolist()
        share.admit(offsets, priorities, next_offset)

    # --- the data path --------------------------------------------------------------------------

    async def fetch(
        self,
        group: str,
        member: str,
        max_records: int,
        max_wait_ms: int,
        reset: str,
        flt: RecordFilter | None = None,
    ) -> FetchResponse:
        """Acquire up to ``max_records`` records for ``member``, waiting up to ``max_wait_ms``
        for the first one; the answer's table has a ``delivery_count`` column.

        ``flt`` is the group's filter: its members pass the same one (the latest a member
        passed applies to records not yet read into the group's window)."""
        validate_group_id(group)
        self.filters[group] = checked_filter(flt)
        if not isinstance(member, str) or not member:
            raise InvalidConfig(f"a share member id is a non-empty str, got {member!r}")
        if reset not in ("earliest", "latest"):
            raise InvalidConfig(f"share.auto.offset.reset is earliest or latest, got {reset!r}")
        for name, value in (("max_records", max_records), ("max_wait_ms", max_wait_ms)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidConfig(f"share fetch {name} must be an int >= 0, got {value!r}")
        max_records = max(1, min(max_records, SHARE_FETCH_MAX_RECORDS))
        deadline = time.monotonic() + min(max_wait_ms, self._fetch_wait_cap_ms) / 1000
        share = await self.state(group, reset)
        while True:
            now = wall_clock_ms()
            if share.expire(now):
                self._after_change(group, share)
                self._spawn(self.save(group))
            with collector_paused():
                self._fill(group, share)
                acquired = share.acquire(member, max_records, now)
            remaining = deadline - time.monotonic()
            if acquired or remaining <= 0:
                break
            upcoming = share.next_change_ms()
            if upcoming is not None:
                remaining = min(remaining, max((upcoming - now) / 1000, 0.001))
            await self.signals.wait_for_data(remaining)
            self.replica.check_leader()
            if self.groups.get(group) is not share:
                share = await self.state(group, reset)
        acquired.sort(key=lambda a: a.offset)
        table = self._records(share, [a.offset for a in acquired])
        if acquired:
            if table.num_rows == len(acquired):  # the read returns them in offset order
                column = [a.delivery_count for a in acquired]
            else:  # retention removed some meanwhile
                counts = {a.offset: a.delivery_count for a in acquired}
                column = [counts[o] for o in table.column("offset").to_pylist()]
            table = table.append_column("delivery_count", pa.array(column, pa.int32()))
            # Delivery counts are saved with the next acknowledgement or lock expiry (as in
            # Kafka, a leader crash before then delivers these again without counting this
            # delivery).
            traced = traced_rows(table)
            if len(traced):
                self.core.trace.delivered(table, traced, group, member=member)
                self.traces.start()
        return FetchResponse(
            to_ipc(table),
            table.num_rows,
            self.core.high_watermark,
            self.core.log.log_start_offset,
        )

    def _records(self, share: SharePartition, offsets: list[int]) -> pa.Table:
        if not offsets:
            return self.core.log.read(self.core.log.log_end_offset, 1)
        first, last = min(offsets), max(offsets)
        table = self.core.log.read(first, last - first + 1, 1 << 62)
        return table.filter(pc.is_in(table.column("offset"), pa.array(sorted(offsets), pa.int64())))

    async def acknowledge(self, group: str, member: str, acks: object) -> list[int]:
        """Apply a member's answers; durable when this returns. Returns the offsets it could
        not apply (not held by ``member``: never delivered to it, already answered, or its lock
        expired), after applying the rest."""
        validate_group_id(group)
        checked = check_acknowledgements(acks)
        share = await self.state(group)
        now = wall_clock_ms()
        share.expire(now)
        failed: list[int] = []
        trace = self.core.trace
        for offsets, kind, error in checked:
            refused = share.acknowledge(member, offsets, kind, now, error)
            failed.extend(refused)
            if trace.awaiting_answer:
                done = set(offsets).difference(refused)
                trace.answered(_ANSWERED[kind], group, sorted(done), member=member, error=error)
                self.traces.start()
        self._after_change(group, share)
        await self.save(group)
        return failed

    def _after_change(self, group: str, share: SharePartition) -> None:
        self.signals.data_arrived()  # released records wake parked fetches
        if share.dead_letters(1):
            self._start_writer(group)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        task.add_done_callback(_log_failure)

    # --- administration -------------------------------------------------------------------------

    async def describe(self, group: str) -> dict[str, Any]:
        share = await self.state(group)
        share.expire(wall_clock_ms())
        self._fill(group, share)
        return {
            "topic": self.core.topic,
            "partition": self.core.partition,
            "high_watermark": self.core.high_watermark,
            "dead_letter_topic": self.dead_letter_topic(group),
            **share.describe(self.core.high_watermark, wall_clock_ms()),
        }

    async def reset(self, group: str, to: str, value: int | None = None) -> int:
        """Start the group over on this partition at earliest, latest or ``value`` (an offset).

        Raises:
            GroupNotEmpty: records are locked by members right now.
            InvalidConfig: a bad ``to``/``value``.
        """
        share = await self.state(group)
        share.expire(wall_clock_ms())
        held = sum(d.state == State.ACQUIRED for d in share.records.values())
        if held:
            raise GroupNotEmpty(
                f"share group {group!r} holds {held} locked record(s) on {self.core.name}; stop "
                "its members (or wait for the locks to expire) first",
                group_id=group,
            )
        offsets = self.core.offsets()
        if to == "earliest":
            offset = offsets.log_start_offset
        elif to == "latest":
            offset = offsets.high_watermark
        elif to == "offset" and isinstance(value, int) and not isinstance(value, bool):
            offset = min(max(value, offsets.log_start_offset), offsets.high_watermark)
        else:
            raise InvalidConfig(f"reset to earliest, latest or offset (with a value), got {to!r}")
        share.reset(offset)
        await self.save(group)
        return offset

    # --- dead letters ---------------------------------------------------------------------------

    def dead_letter_topic(self, group: str) -> str | None:
        template = self.core.log.config.share_dlq_topic
        return dead_letter_topic(template, self.core.topic, group) if template else None

    def _start_writer(self, group: str) -> None:
        task = self._writers.get(group)
        if task is None or task.done():
            self._writers[group] = asyncio.get_running_loop().create_task(
                self._write_dead_letters(group)
            )

    async def _write_dead_letters(self, group: str) -> None:
        """Copy dead letters to the group's dead-letter topic until none waits; survives any
        error (retries the same batch) and ends when this replica stops leading."""
        while True:
            share = self.groups.get(group)
            if share is None:
                return
            try:
                if share.dlq_batch is None:
                    waiting = share.dead_letters(DEAD_LETTER_BATCH_RECORDS)
                    if not waiting:
                        return
                    producer_id = random.randrange(TRANSACTIONAL_ID_SPACE, 2**63 - 1)
                    share.begin_dead_letter_batch([o for o, _ in waiting], producer_id)
                    await self.save(group)
                await self._write_batch(group, share)
                if self.core.trace.awaiting_answer:
                    target = self.dead_letter_topic(group)
                    self.core.trace.answered(
                        "dead_lettered", group, share.dlq_batch or [], dead_letter_topic=target
                    )
                    self.traces.start()
                share.dead_letter_batch_written()
                await self.save(group)
                self.signals.data_arrived()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a moving DLQ leader, a restarting coordinator: retry
                logger.warning(
                    "%s: dead letters of %r not written yet: %s", self.core.name, group, exc
                )
                self._dlq_leaders.pop(group, None)
                await asyncio.sleep(DEAD_LETTER_RETRY_S)

    async def _write_batch(self, group: str, share: SharePartition) -> None:
        assert share.dlq_batch is not None
        target = self.dead_letter_topic(group)
        offsets = share.dlq_batch
        letters = dead_letter_rows(
            self._records(share, offsets),
            {o: share.delivery_of(o) for o in offsets},
            self.core.topic,
            self.core.partition,
            group,
        )
        if letters.num_rows != len(offsets):
            # Retention removed some of them: there is nothing left to copy for those.
            logger.warning(
                "%s: %d dead letters no longer in the log",
                self.core.name,
                len(offsets) - letters.num_rows,
            )
        leader = await self._dead_letter_leader(group, target)
        if letters.num_rows:
            ref = submit(
                leader.produce,
                letters,
                share.dlq_producer_id,
                0,
                share.dlq_next_sequence,
                -1,
                False,
                session=self._named.token,
            )
            await await_ref(ref, COORDINATOR_CALL_TIMEOUT_S)

    async def _dead_letter_leader(self, group: str, target: str | None) -> Any:
        leader = self._dlq_leaders.get(group)
        if leader is not None:
            return leader
        if target is None:
            raise InvalidConfig("share.dlq.topic is empty: no dead-letter topic")
        controller = self._controller
        token = self._named.token
        replication = max(len(self.replica.followers) + 1, 1)
        with contextlib.suppress(TopicExists):
            await await_ref(
                submit(controller.create_topic, target, 1, replication, None, session=token),
                COORDINATOR_CALL_TIMEOUT_S,
            )
        meta = await await_ref(
            submit(controller.metadata, target, session=token), COORDINATOR_CALL_TIMEOUT_S
        )
        leader = meta.leader(self.core.partition % meta.num_partitions)
        self._dlq_leaders[group] = leader
        return leader


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.info("share state save failed (the next one retries): %s", task.exception())
