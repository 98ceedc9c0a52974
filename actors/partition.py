"""``PartitionActor``: one replica of a partition, leader or follower, as a Ray actor.

Everything that touches the log runs on the actor's single event loop, so the log needs no
locks: a long-poll fetch waits with ``await`` (it never blocks produce), and the only blocking
work — writing a rolled segment's Parquet file — runs on a worker thread. (DESIGN.md suggested
produce/fetch concurrency groups; each group is its own thread and loop, which would share the
log across threads and need cross-loop wake-ups on every append.)

Replication is leader-driven: the leader runs one sender task per follower that reads the
follower's missing records from its own log (memory or Parquet) and pushes them with
``replicate`` — one request in flight per follower, so batches arrive in order (Ray does not
order an async actor's calls), a new or lagging follower catches up the same way, and the
follower's answer (its log end) tells the leader its progress. The high watermark is the lowest
log end among the in-sync replicas; ``acks=all`` waits for it to pass the batch. Before
streaming, a sender asks the follower for its newest leader epoch and truncates it where that
epoch ends on the leader (KIP-101), so no replica keeps records an old leader never committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ray_broker.actors.partition_core import Partition
from ray_broker.config import TopicConfig, parse_config
from ray_broker.errors import (
    FencedLeaderEpoch,
    InvalidRecord,
    NotEnoughReplicas,
    NotLeader,
)
from ray_broker.structs import FetchResponse, PartitionOffsets, ProduceResult

logger = logging.getLogger(__name__)

# How long a producer batch that arrived before its predecessor waits for it (Ray does not
# order an async actor's calls). Past this an unknown producer starts fresh and a known one gets
# OutOfOrderSequence and resends in order.
SEQUENCE_WAIT_MS = 5_000
# Records per replication request, and how long an idle sender waits before a heartbeat push
# (which carries the high watermark and keeps the follower's lag clock fresh).
REPLICA_FETCH_RECORDS = 100_000
REPLICA_IDLE_PUSH_MS = 200
REPLICA_RETRY_BACKOFF_MS = 100
ACKS_ALL_TIMEOUT_MS = 30_000


class Role(str, enum.Enum):
    UNKNOWN = "unknown"  # just (re)started; asks the Controller
    LEADER = "leader"
    FOLLOWER = "follower"


@dataclass
class FollowerLink:
    """What the leader knows of one follower."""

    slot: str
    handle: Any
    log_end_offset: int = -1
    caught_up_at: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None


def records_to_ipc(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def ipc_to_records(buffer: Any) -> pa.Table:
    return pa.ipc.open_stream(buffer).read_all()


class PartitionActor:
    """The Ray actor around ``Partition``. Created by the Controller with ``max_restarts=-1`` and
    pinned to its node: a restarted actor rebuilds its log from its files and asks the
    Controller for its role."""

    def __init__(
        self,
        topic: str,
        partition: int,
        directory: str,
        config: dict[str, Any],
        maintenance_interval_ms: int = 60_000,
        fetch_max_wait_cap_ms: int = 30_000,
        slot: str = "r0",
        controller: Any = None,
    ) -> None:
        self.core = Partition(topic, partition, directory, parse_config(TopicConfig, config))
        self.slot = slot
        self.role = Role.UNKNOWN
        self.leader_epoch = -1
        self.isr: set[str] = set()
        self.links: dict[str, FollowerLink] = {}
        self._controller = controller
        self._maintenance_interval_s = maintenance_interval_ms / 1000
        self._fetch_wait_cap_ms = fetch_max_wait_cap_ms
        self._data_arrived: asyncio.Event | None = None
        self._hw_moved: asyncio.Event | None = None
        self._background: list[asyncio.Task[None]] = []
        self._sealing: asyncio.Task[None] | None = None
        self._role_lock: asyncio.Lock | None = None

    # --- start-up and roles ---------------------------------------------------------------------

    def _start_background(self) -> None:
        if self._data_arrived is None:
            self._data_arrived = asyncio.Event()
            self._hw_moved = asyncio.Event()
            self._role_lock = asyncio.Lock()
            loop = asyncio.get_running_loop()
            self._background.append(loop.create_task(self._maintenance()))
            self._background.append(loop.create_task(self._isr_checks()))

    async def _ensure_role(self) -> None:
        """After a restart, learn this replica's role from the Controller."""
        self._start_background()
        if self.role != Role.UNKNOWN or self._controller is None:
            return
        assert self._role_lock is not None
        async with self._role_lock:
            if self.role != Role.UNKNOWN:
                return
            state = await self._controller.replica_state.remote(
                self.core.topic, self.core.partition, self.slot
            )
            if state is not None:
                await self._apply_state(**state)

    async def _apply_state(
        self, role: str, epoch: int, replicas: dict[str, Any], isr: list[str]
    ) -> None:
        if role == Role.LEADER.value:
            await self.become_leader(epoch, replicas, isr)
        else:
            await self.become_follower(epoch)

    async def become_leader(self, epoch: int, replicas: dict[str, Any], isr: list[str]) -> None:
        """Lead ``epoch`` with these replicas (slot → handle) and in-sync slots."""
        self._take_role(Role.LEADER, epoch)
        self.core.become_leader(epoch)
        self.isr = set(isr) | {self.slot}
        loop = asyncio.get_running_loop()
        for slot, handle in replicas.items():
            if slot == self.slot:
                continue
            link = FollowerLink(slot, handle)
            link.task = loop.create_task(self._replicate_to(link))
            self.links[slot] = link
        self._advance_high_watermark()

    async def become_follower(self, epoch: int) -> None:
        self._take_role(Role.FOLLOWER, epoch)
        self.isr = set()
        self._notify_hw()  # acks=all waiters learn they lost the leadership

    def _take_role(self, role: Role, epoch: int) -> None:
        """Switch role for ``epoch`` (the Controller's order); older epochs are refused."""
        self._start_background()
        if epoch < self.leader_epoch:
            raise FencedLeaderEpoch(f"{self.core.name}: epoch {epoch} < {self.leader_epoch}")
        self._stop_links()
        self.role = role
        self.leader_epoch = epoch

    def _stop_links(self) -> None:
        for link in self.links.values():
            if link.task is not None:
                link.task.cancel()
        self.links = {}

    def _step_down(self, epoch: int) -> None:
        """A newer leader exists (a follower said so): stop acting as leader."""
        if epoch > self.leader_epoch or self.role == Role.LEADER:
            logger.warning("%s: fenced by leader epoch %d, stepping down", self.core.name, epoch)
            self._stop_links()
            self.role = Role.FOLLOWER
            self.leader_epoch = max(self.leader_epoch, epoch)
            self._notify_hw()

    def _check_leader(self) -> None:
        if self.role != Role.LEADER:
            raise NotLeader(
                f"replica {self.slot} of {self.core.name} is not the leader (role "
                f"{self.role.value}, epoch {self.leader_epoch}); refresh metadata and retry"
            )

    def _notify_data(self) -> None:
        if self._data_arrived is not None:
            self._data_arrived.set()
            self._data_arrived = asyncio.Event()

    def _notify_hw(self) -> None:
        if self._hw_moved is not None:
            self._hw_moved.set()
            self._hw_moved = asyncio.Event()

    # --- introspection --------------------------------------------------------------------------

    async def ready(self) -> PartitionOffsets:
        self._start_background()
        return self.core.offsets()

    async def info(self) -> dict[str, Any]:
        """Where this replica runs and what it is; for describe and fault tests."""
        import ray

        await self._ensure_role()
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "slot": self.slot,
            "role": self.role.value,
            "epoch": self.leader_epoch,
            "isr": sorted(self.isr),
            "offsets": self.core.offsets(),
        }

    # --- produce --------------------------------------------------------------------------------

    async def produce(
        self,
        batch: pa.Table,
        producer_id: int | None = None,
        producer_epoch: int = 0,
        base_sequence: int = 0,
        acks: int = -1,
    ) -> ProduceResult:
        """Append a producer batch as the leader.

        Raises:
            NotLeader: this replica is not the leader (refresh metadata).
            NotEnoughReplicas: acks=all and fewer in-sync replicas than min.insync.replicas
                (nothing was written), or they did not confirm in time.
            InvalidRecord, RecordTooLarge, OutOfOrderSequence, ProducerFenced.
        """
        await self._ensure_role()
        self._check_leader()
        min_isr = self.core.log.config.min_insync_replicas
        if acks == -1 and len(self.isr) < min_isr:
            raise NotEnoughReplicas(
                f"{self.core.name} has {len(self.isr)} in-sync replica(s), fewer than "
                f"min.insync.replicas={min_isr}; nothing was written"
            )
        if producer_id is not None:
            await self._await_predecessors(producer_id, producer_epoch, base_sequence)
            self._check_leader()
        result = self.core.produce(batch, producer_id, producer_epoch, base_sequence)
        if not result.duplicate:
            self._advance_high_watermark()
            self._notify_data()
            self._seal_in_background()
        if acks == -1:
            await self._await_committed(result.last_offset + 1)
        return result

    async def _await_committed(self, offset: int) -> None:
        deadline = time.monotonic() + ACKS_ALL_TIMEOUT_MS / 1000
        epoch = self.leader_epoch
        while self.core.high_watermark < offset:
            if self.role != Role.LEADER or self.leader_epoch != epoch:
                raise NotLeader(
                    f"{self.core.name}: lost the leadership before the write was replicated; "
                    "it may or may not be committed — retry (idempotence deduplicates)"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._hw_moved is None:
                raise NotEnoughReplicas(
                    f"{self.core.name}: in-sync replicas did not confirm offset {offset - 1} "
                    f"within {ACKS_ALL_TIMEOUT_MS} ms"
                )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._hw_moved.wait(), remaining)

    async def _await_predecessors(self, producer_id: int, epoch: int, sequence: int) -> None:
        deadline = time.monotonic() + SEQUENCE_WAIT_MS / 1000
        while self.core.producers.is_ahead(producer_id, epoch, sequence):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._data_arrived is None:
                return  # produce() decides: a fresh start, or OutOfOrderSequence
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._data_arrived.wait(), remaining)

    def _advance_high_watermark(self) -> None:
        """HW = lowest log end among in-sync replicas (this leader included)."""
        if self.role != Role.LEADER:
            return
        ends = [self.core.log_end_offset]
        for slot in self.isr:
            if slot != self.slot:
                link = self.links.get(slot)
                ends.append(link.log_end_offset if link is not None else -1)
        if self.core.advance_high_watermark(min(ends)):
            self._notify_hw()
            self._notify_data()  # consumers wait for committed records, not appended ones

    # --- fetch ----------------------------------------------------------------------------------

    async def fetch(
        self, offset: int, max_records: int, max_bytes: int, max_wait_ms: int = 0
    ) -> FetchResponse:
        """Committed records from ``offset``; waits up to ``max_wait_ms`` for the first one."""
        await self._ensure_role()
        self._check_leader()
        deadline = time.monotonic() + min(max_wait_ms, self._fetch_wait_cap_ms) / 1000
        while True:
            table = self.core.read(offset, max_records, max_bytes)
            remaining = deadline - time.monotonic()
            if table.num_rows or remaining <= 0 or self._data_arrived is None:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._data_arrived.wait(), remaining)
            self._check_leader()
        return FetchResponse(
            records_to_ipc(table),
            table.num_rows,
            self.core.high_watermark,
            self.core.log.log_start_offset,
        )

    async def offsets(self) -> PartitionOffsets:
        await self._ensure_role()
        return self.core.offsets()

    async def offset_for_time(self, timestamp: int) -> tuple[int, int] | None:
        return self.core.offset_for_time(timestamp)

    # --- follower side --------------------------------------------------------------------------

    def _check_epoch(self, epoch: int) -> None:
        if epoch < self.leader_epoch:
            raise FencedLeaderEpoch(
                f"replica {self.slot} of {self.core.name} follows epoch {self.leader_epoch}; "
                f"a leader of epoch {epoch} is stale"
            )
        if epoch > self.leader_epoch or self.role != Role.FOLLOWER:
            if self.role == Role.LEADER and epoch == self.leader_epoch:
                raise FencedLeaderEpoch(f"two leaders claim epoch {epoch} of {self.core.name}")
            self._step_down(epoch)
            self.role = Role.FOLLOWER
            self.leader_epoch = epoch

    async def epoch_state(self, epoch: int) -> tuple[int, int]:
        """(latest leader epoch, log end offset) for a new leader's divergence check."""
        self._start_background()
        self._check_epoch(epoch)
        return self.core.epochs.latest_epoch, self.core.log_end_offset

    async def truncate(self, epoch: int, offset: int, leader_log_start: int) -> int:
        """Cut this follower's log at ``offset`` (or restart it at the leader's log start when it
        is too far behind); returns the new log end offset."""
        self._check_epoch(epoch)
        if self.core.log_end_offset < leader_log_start:
            self.core.start_from(leader_log_start)
        else:
            self.core.truncate_to(min(offset, self.core.log_end_offset))
        return self.core.log_end_offset

    async def replicate(
        self,
        epoch: int,
        records_ipc: Any,
        epochs: list[tuple[int, int]],
        leader_high_watermark: int,
    ) -> int:
        """Append the leader's records (offsets included); returns the new log end offset.

        Raises:
            FencedLeaderEpoch: the sender is an old leader.
            InvalidRecord: the records do not continue this log (the leader re-syncs).
        """
        self._start_background()
        self._check_epoch(epoch)
        table = ipc_to_records(records_ipc) if records_ipc is not None else None
        if table is not None and table.num_rows:
            self.core.append_replica(table, epochs)
            self._seal_in_background()
        self.core.high_watermark = max(
            self.core.high_watermark, min(leader_high_watermark, self.core.log_end_offset)
        )
        return self.core.log_end_offset

    # --- leader side: one sender per follower -----------------------------------------------------

    async def _replicate_to(self, link: FollowerLink) -> None:
        epoch = self.leader_epoch
        synced = False
        while self.role == Role.LEADER and self.leader_epoch == epoch:
            try:
                if not synced:
                    link.log_end_offset = await self._resync(link, epoch)
                    synced = True
                    self._advance_high_watermark()
                await self._push(link, epoch)
            except asyncio.CancelledError:
                raise
            except FencedLeaderEpoch:
                self._step_down(epoch + 1)
                return
            except InvalidRecord:
                synced = False  # the follower's log moved (it restarted): compare again
            except Exception as exc:  # follower down or restarting: retry, it stays out of ISR
                logger.debug("%s: replication to %s failed: %s", self.core.name, link.slot, exc)
                synced = False
                await asyncio.sleep(REPLICA_RETRY_BACKOFF_MS / 1000)

    async def _resync(self, link: FollowerLink, epoch: int) -> int:
        follower_epoch, follower_end = await link.handle.epoch_state.remote(epoch)
        end = self.core.epochs.end_offset_for(follower_epoch, self.core.log_end_offset)
        target = min(follower_end, end)
        if target == follower_end and follower_end >= self.core.log.log_start_offset:
            return follower_end
        return await link.handle.truncate.remote(epoch, target, self.core.log.log_start_offset)

    async def _push(self, link: FollowerLink, epoch: int) -> None:
        leader_end = self.core.log_end_offset
        if link.log_end_offset >= leader_end:
            link.caught_up_at = time.monotonic()
            waiter = self._data_arrived
            assert waiter is not None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(waiter.wait(), REPLICA_IDLE_PUSH_MS / 1000)
            leader_end = self.core.log_end_offset
        table = None
        if link.log_end_offset < leader_end:
            table = self.core.log.read(link.log_end_offset, REPLICA_FETCH_RECORDS)
        payload = records_to_ipc(table) if table is not None and table.num_rows else None
        follower_end = await link.handle.replicate.remote(
            epoch, payload, self.core.epochs.entries, self.core.high_watermark
        )
        link.log_end_offset = follower_end
        if follower_end >= leader_end:
            link.caught_up_at = time.monotonic()
        self._advance_high_watermark()

    async def _isr_checks(self) -> None:
        """Shrink the ISR when a follower lags more than replica.lag.time.max.ms; expand it when
        a follower has caught up to the high watermark. The Controller records every change."""
        while True:
            await asyncio.sleep(0.1)
            if self.role != Role.LEADER or self._controller is None:
                continue
            lag_s = self.core.log.config.replica_lag_time_max_ms / 1000
            now = time.monotonic()
            isr = set(self.isr)
            for slot, link in self.links.items():
                if slot in isr and now - link.caught_up_at > lag_s:
                    isr.discard(slot)
                elif (
                    slot not in isr
                    and link.log_end_offset >= self.core.high_watermark
                    and now - link.caught_up_at <= lag_s
                ):
                    isr.add(slot)
            if isr != self.isr:
                await self._alter_isr(isr)

    async def _alter_isr(self, isr: set[str]) -> None:
        epoch = self.leader_epoch
        try:
            accepted = await self._controller.alter_isr.remote(
                self.core.topic, self.core.partition, epoch, sorted(isr)
            )
        except Exception as exc:  # Controller restarting, or we were fenced
            logger.info("%s: ISR change to %s refused: %s", self.core.name, sorted(isr), exc)
            return
        if self.role == Role.LEADER and self.leader_epoch == epoch:
            self.isr = set(accepted) | {self.slot}
            self._advance_high_watermark()

    # --- housekeeping ---------------------------------------------------------------------------

    async def update_config(self, config: dict[str, Any]) -> None:
        self.core.log.config = parse_config(TopicConfig, config)

    async def maintain(self) -> dict[str, int]:
        """Run housekeeping now (the background loop runs it every retention check interval)."""
        report = self.core.maintain()
        sealing = self._seal_in_background()
        if sealing is not None:
            await sealing
        return report

    def _seal_in_background(self) -> asyncio.Task[None] | None:
        """One sealing task at a time: two would write the same segment's Parquet file."""
        if self._sealing is None and self.core.log.next_segment_to_seal() is not None:
            self._sealing = asyncio.get_running_loop().create_task(self._seal())
        return self._sealing

    async def _seal(self) -> None:
        log = self.core.log
        try:
            while (segment := log.next_segment_to_seal()) is not None and not self.core.deleted:
                sealed = await asyncio.to_thread(log.write_sealed, segment)
                log.install_sealed(segment, sealed)
        finally:
            self._sealing = None

    async def _maintenance(self) -> None:
        while not self.core.deleted:
            await asyncio.sleep(self._maintenance_interval_s)
            if self.core.deleted:
                return
            try:
                await self.maintain()
            except Exception:  # keep serving; the next round retries
                logger.exception("housekeeping of partition %s failed", self.core.name)

    async def close(self) -> None:
        """Finish sealing and close the log's files (before the actor is killed)."""
        self._stop_links()
        for task in self._background:
            task.cancel()
        if self._sealing is not None:
            with contextlib.suppress(Exception):
                await self._sealing
        self.core.log.close()

    async def delete(self) -> None:
        await self.close()
        self.core.delete()
        self._notify_data()
