"""``PartitionActor``: one replica of a partition, leader or follower, as a Ray actor.

Everything that touches the log runs on the actor's single event loop, so the log needs no
locks: a long-poll fetch waits with ``await`` (it never blocks produce), and the only blocking
work — writing a rolled segment's Parquet file — runs on a worker thread. (Concurrency groups
for produce and fetch were the other design: each group is its own thread and loop, which
would share the log across threads and need cross-loop wake-ups on every append.)

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
import dataclasses
import hmac
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ray_broker._ray import await_ref, classify, submit
from ray_broker.actors.data_dir import make_private
from ray_broker.actors.lean_arrow import skip_pandas_probe
from ray_broker.actors.partition.core import Partition
from ray_broker.actors.partition.message_trace import traced_rows
from ray_broker.actors.partition.replica import Replica, Role
from ray_broker.actors.partition.share_groups import ShareGroups
from ray_broker.actors.partition.trace_shipper import TraceShipper
from ray_broker.actors.priority import serve_at_normal_priority
from ray_broker.actors.security.access_guard import DISABLED
from ray_broker.actors.security.guarded import GuardedActor
from ray_broker.actors.security.session_tokens import SessionClaims
from ray_broker.config import DELAY_TARGET_HEADER, DELAY_TOPIC, TopicConfig, parse_config
from ray_broker.errors import (
    BrokerBusy,
    BrokerError,
    FencedLeaderEpoch,
    InvalidConfig,
    InvalidRecord,
    InvalidTxnState,
    NotEnoughReplicas,
    NotEnoughReplicasAfterAppend,
    NotLeader,
    Unauthorized,
)
from ray_broker.hops import STAMPS
from ray_broker.metrics import PartitionMetrics
from ray_broker.storage.ipc import from_ipc, to_ipc
from ray_broker.storage.record_filter import RecordFilter, checked_filter, header_column
from ray_broker.structs import FetchResponse, PartitionOffsets, ProduceResult

logger = logging.getLogger(__name__)

# How long a producer batch that arrived before its predecessor waits for it (Ray does not
# order an async actor's calls). Past this an unknown producer starts fresh and a known one gets
# OutOfOrderSequence and resends in order.
SEQUENCE_WAIT_MS = 5_000
LEADER_CALL_TIMEOUT_S = 30.0  # a call to the transaction coordinator
# How long a write waits for Parquet sealing to catch up before BrokerBusy (see _make_room).
UNSEALED_WAIT_S = 10.0
# Records per replication request, and how long an idle sender waits before a heartbeat push
# (which carries the high watermark and keeps the follower's lag clock fresh).
REPLICA_FETCH_RECORDS = 100_000
REPLICA_IDLE_PUSH_MS = 200
REPLICA_RETRY_BACKOFF_MS = 100
ACKS_ALL_TIMEOUT_MS = 30_000
# Per fetch answer, whatever the client asks (Kafka's fetch.max.bytes), and long polls parked.
FETCH_MAX_RECORDS = 1_000_000
FETCH_MAX_BYTES = 64 * 1024 * 1024
PARKED_FETCHES_MAX = 256
ISR_CHECK_INTERVAL_MS = 100
# A leader without followers (or a follower) has no ISR to watch closely: it wakes once a
# second, for its gauges and any late ISR change — ten wake-ups a second on every idle
# partition actor were a measurable share of an idle broker's CPU.
LONE_CHECK_INTERVAL_MS = 1_000
# Offsets and ISR gauges (ray_broker.metrics) are set this often.
METRICS_INTERVAL_S = 1.0
ALTER_ISR_TIMEOUT_S = 5.0


@dataclass
class FollowerLink:
    """The leader's connection to one follower (its progress lives in ``Replica``)."""

    slot: str
    handle: Any
    task: asyncio.Task[None] | None = None


def _is_int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_produce_arguments(
    producer_id: object, producer_epoch: object, base_sequence: object, acks: object
) -> None:
    """Raises InvalidRecord / InvalidConfig for values a real producer never sends."""
    if producer_id is not None and not _is_int(producer_id, 0, 2**63 - 1):
        raise InvalidRecord(f"producer_id must be None or an int >= 0, got {producer_id!r}")
    if not _is_int(producer_epoch, 0, 2**15 - 1):
        raise InvalidRecord(f"producer_epoch must be an int in [0, 32767], got {producer_epoch!r}")
    if not _is_int(base_sequence, 0, 2**31 - 1):
        raise InvalidRecord(f"base_sequence must be an int in [0, 2**31), got {base_sequence!r}")
    if acks not in (0, 1, -1) or isinstance(acks, bool):
        raise InvalidConfig(f"acks must be 0, 1 or -1 (all), got {acks!r}")


def _check_epoch_value(epoch: object) -> None:
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch < 2**31:
        raise InvalidRecord(f"a leader epoch is an int in [0, 2**31), got {epoch!r}")


def _was_restarted() -> bool:
    """Whether this actor process replaces one that died (False outside a Ray actor)."""
    try:
        import ray

        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # not running as an actor (unit tests)
        return False


class PartitionActor(GuardedActor):
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
        token: str = "",
        namespace: str = "",
    ) -> None:
        skip_pandas_probe()
        make_private()
        serve_at_normal_priority()
        self.core = Partition(
            topic, partition, directory, parse_config(TopicConfig, config), replica=slot
        )
        # Role, epoch and replication calls must carry the Controller's token: a caller with
        # only this actor's handle cannot demote a leader or rewrite its log.
        self._token = token
        self._namespace = namespace  # the broker's, where its transaction coordinator is named
        self._transactions: Any = None  # the transaction coordinator's handle, once needed
        self._parked = 0  # long polls waiting for data right now
        self.slot = slot
        self.replica = Replica(slot, self.core, time.monotonic)
        self.links: dict[str, FollowerLink] = {}
        self._controller = controller
        self._maintenance_interval_s = maintenance_interval_ms / 1000
        self._fetch_wait_cap_ms = fetch_max_wait_cap_ms
        self._data_arrived: asyncio.Event | None = None
        self._hw_moved: asyncio.Event | None = None
        self._background: list[asyncio.Task[None]] = []
        self._sealing: asyncio.Task[None] | None = None
        self._tiering = False
        self._role_lock: asyncio.Lock | None = None
        # A restarted process must not resume leading the epoch it led before the crash (its
        # high watermark is relearned and would move back within that epoch): it asks the
        # Controller first, which gives a restarted leader a new epoch.
        self._restarted = _was_restarted()
        self.metrics = PartitionMetrics(topic, partition)
        self.shares = ShareGroups(self)
        self.traces = TraceShipper(self.core.trace, controller, self._trace_replication, token)
        self._init_guard(token, lambda: self._controller)
        if controller is None:  # a stand-alone partition (tests): nobody to ask for rules
            self._guard.apply(DISABLED)

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
        if self.replica.role != Role.UNKNOWN or self._controller is None:
            return
        assert self._role_lock is not None
        async with self._role_lock:
            if self.replica.role != Role.UNKNOWN:
                return
            state = await await_ref(
                submit(
                    self._controller.replica_state,
                    self.core.topic,
                    self.core.partition,
                    self.slot,
                    self._restarted,
                    session=self._token,
                ),
                ALTER_ISR_TIMEOUT_S,
            )
            if state is not None:
                self._apply_state(**state)

    def _apply_state(self, role: str, epoch: int, replicas: dict[str, Any], isr: list[str]) -> None:
        if role == Role.LEADER.value:
            self._become_leader(epoch, replicas, isr)
        else:
            self._become_follower(epoch)

    async def become_leader(
        self, epoch: int, replicas: dict[str, Any], isr: list[str], *, token: str = ""
    ) -> None:
        """Lead ``epoch`` with these replicas (slot → handle) and in-sync slots (the
        Controller's order; a restarted replica first asks for its current role).

        Raises:
            FencedLeaderEpoch: an older epoch than this replica already knows.
            Unauthorized: the call does not carry the Controller's token.
        """
        self._authorize(token)
        _check_epoch_value(epoch)
        if self._restarted:
            await self._ensure_role()
        self._become_leader(epoch, replicas, isr)

    def _become_leader(self, epoch: int, replicas: dict[str, Any], isr: list[str]) -> None:
        self._start_background()
        self.replica.become_leader(epoch, replicas, isr)
        self._stop_links()
        loop = asyncio.get_running_loop()
        for slot, handle in replicas.items():
            if slot == self.slot:
                continue
            link = FollowerLink(slot, handle)
            link.task = loop.create_task(self._replicate_to(link))
            self.links[slot] = link
        self._on_high_watermark(moved=True)

    async def become_follower(self, epoch: int, *, token: str = "") -> None:
        """Follow the leader of ``epoch``. Raises FencedLeaderEpoch for an older epoch,
        Unauthorized without the Controller's token."""
        self._authorize(token)
        _check_epoch_value(epoch)
        if self._restarted:
            await self._ensure_role()
        self._become_follower(epoch)

    def _become_follower(self, epoch: int) -> None:
        self._start_background()
        self.replica.become_follower(epoch)
        self.shares.clear()
        self.core.trace.forget_uncommitted()
        self._stop_links()
        self._notify_hw()  # acks=all waiters learn they lost the leadership

    def _stop_links(self) -> None:
        for link in self.links.values():
            if link.task is not None:
                link.task.cancel()
        self.links = {}

    def _step_down(self, epoch: int) -> None:
        """A newer leader exists (a follower said so): stop acting as leader."""
        if self.replica.step_down(epoch):
            logger.warning("%s: fenced by leader epoch %d, stepping down", self.core.name, epoch)
        self.shares.clear()
        self._stop_links()
        self._notify_hw()

    def _check_leader(self) -> None:
        self.replica.check_leader()

    def _notify_data(self) -> None:
        if self._data_arrived is not None:
            self._data_arrived.set()
            self._data_arrived = asyncio.Event()

    def _notify_hw(self) -> None:
        if self._hw_moved is not None:
            self._hw_moved.set()
            self._hw_moved = asyncio.Event()

    # --- introspection --------------------------------------------------------------------------

    async def ready(self, *, session: str = "") -> PartitionOffsets:
        await self._access(session, "describe", "topic", self.core.topic)
        self._start_background()
        return self.core.offsets()

    async def info(self, *, session: str = "") -> dict[str, Any]:
        """Where this replica runs and what it is; for describe and fault tests."""
        import ray

        await self._access(session, "describe", "topic", self.core.topic)
        await self._ensure_role()
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "slot": self.slot,
            "role": self.replica.role.value,
            "epoch": self.replica.leader_epoch,
            "isr": sorted(self.replica.isr),
            "offsets": self.core.offsets(),
            "unsealed_bytes": self.core.log.unsealed_bytes,
        }

    # --- produce --------------------------------------------------------------------------------

    async def produce(
        self,
        batch: pa.Table | pa.Buffer | bytes,
        producer_id: int | None = None,
        producer_epoch: int = 0,
        base_sequence: int = 0,
        acks: int = -1,
        predecessors_in_flight: bool = True,
        transactional: bool = False,
        client_id: str = "",
        *,
        session: str = "",
    ) -> ProduceResult:
        """Append a producer batch (a Table, or the IPC stream of one as clients send it) as
        the leader.

        ``predecessors_in_flight`` says whether the producer has earlier batches of this
        partition on their way; only then does a batch that skips sequences wait for them (Ray
        does not order an async actor's calls). A producer this partition no longer knows (its
        state expired) resumes at once instead of waiting out ``SEQUENCE_WAIT_MS``.

        Raises:
            NotLeader: this replica is not the leader (refresh metadata).
            NotEnoughReplicas: acks=all and fewer in-sync replicas than min.insync.replicas
                (nothing was written), or they did not confirm in time.
            NotEnoughReplicasAfterAppend: acks=all, written, but the in-sync replicas shrank
                below min.insync.replicas before the write was committed (retry: idempotence
                deduplicates).
            BrokerBusy: segments are written to Parquet slower than they arrive and did not
                catch up within ``UNSEALED_WAIT_S`` (retriable; nothing was written).
            InvalidRecord, RecordTooLarge, OutOfOrderSequence, ProducerFenced.
            InvalidTxnState: a transactional batch from a producer epoch whose transaction the
                coordinator has not added this partition to (KIP-890: a late write of an
                ended transaction never lands in the next one).
            AuthenticationFailed, Unauthorized: the session may not write this topic.

        Over the caller's produce quota the answer is held back (``throttle_time_ms``).
        """
        received_ns = time.monotonic_ns() if STAMPS.enabled else 0
        schedule = self.core.topic == DELAY_TOPIC
        if schedule:  # what matters is the topics the delayed records are for (below)
            claims = await self._who(session)
        else:
            claims = await self._access(session, "write", "topic", self.core.topic)
        started = time.perf_counter()
        _check_produce_arguments(producer_id, producer_epoch, base_sequence, acks)
        ipc_bytes = None
        if isinstance(batch, (pa.Buffer, bytes)):
            ipc_bytes = len(batch) if isinstance(batch, bytes) else batch.size
            batch = from_ipc(batch)
        if schedule and self._guard.enabled:
            self._check_delay_targets(session, batch)
        await self._ensure_role()
        self._check_leader()
        min_isr = self.core.log.config.min_insync_replicas
        if acks == -1 and not self.replica.enough_replicas(min_isr):
            raise NotEnoughReplicas(
                f"{self.core.name} has {len(self.replica.isr)} in-sync replica(s), fewer than "
                f"min.insync.replicas={min_isr}; nothing was written"
            )
        await self._make_room()
        self._check_leader()
        if transactional:
            await self._verify_transaction(producer_id, producer_epoch)
        if producer_id is not None and predecessors_in_flight:
            await self._await_predecessors(producer_id, producer_epoch, base_sequence)
            self._check_leader()
        result = self.core.produce(
            batch, producer_id, producer_epoch, base_sequence, bool(transactional)
        )
        if self.core.trace.events:
            self.traces.start()
        if not result.duplicate:
            if STAMPS.enabled:
                STAMPS.stamp("actor_receipt", result.base_offset, received_ns)
                STAMPS.stamp("appended", result.base_offset)
            self._on_high_watermark(self.replica.advance_high_watermark())
            self._notify_data()
            self._seal_in_background()
        if acks == -1:
            await self._await_committed(result.last_offset + 1)
            if not self.replica.enough_replicas(min_isr):
                # Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND: the write reached only the
                # leader's shrunken ISR, which is not the durability acks=all promised.
                raise NotEnoughReplicasAfterAppend(
                    f"{self.core.name}: offset {result.last_offset} was written but the "
                    f"in-sync replicas shrank to {len(self.replica.isr)}, fewer than "
                    f"min.insync.replicas={min_isr}; retry (idempotence deduplicates)"
                )
        size = batch.get_total_buffer_size() if ipc_bytes is None else ipc_bytes
        if not result.duplicate:
            self.metrics.produced(
                result.last_offset - result.base_offset + 1, size, time.perf_counter() - started
            )
        throttle_ms = self._guard.throttle_ms(claims, client_id, "producer_byte_rate", size)
        if throttle_ms:
            await asyncio.sleep(throttle_ms / 1000)
            return dataclasses.replace(result, throttle_time_ms=throttle_ms)
        return result

    def _check_delay_targets(self, session: object, batch: pa.Table) -> None:
        """A delayed record is written to its topic later by the scheduler (the broker
        itself): the sender must be allowed to write that topic now.

        Raises:
            Unauthorized: the caller may not write one of the records' target topics.
            InvalidRecord: the batch is not a table of records.
        """
        if not isinstance(batch, pa.Table) or "headers" not in batch.column_names:
            raise InvalidRecord(f"{self.core.name}: a batch of records has a headers column")
        targets = pc.unique(header_column(batch.column("headers"), DELAY_TARGET_HEADER))
        for target in targets.to_pylist():
            name = target.decode("utf-8", "replace") if isinstance(target, bytes) else ""
            self._guard.check(session, "write", "topic", name)

    async def _verify_transaction(self, producer_id: int | None, epoch: int) -> None:
        """The first transactional write of a producer epoch here asks the transaction
        coordinator whether this partition is in that epoch's open transaction."""
        import ray

        from ray_broker.config import TRANSACTION_COORDINATOR_NAME

        if producer_id is None:
            raise InvalidTxnState("a transactional write needs a producer id and epoch")
        if self.core.log.config.compacts:
            raise InvalidTxnState(
                f"{self.core.name}: transactions on compacted topics are not supported yet "
                "(compaction would drop transaction markers)"
            )
        if self.core.txns.is_open(producer_id, epoch):
            return
        if self._transactions is None:
            # Looked up once (a GCS round trip that would block this actor's event loop on
            # every transaction), and again after a failed call.
            try:
                self._transactions = ray.get_actor(
                    TRANSACTION_COORDINATOR_NAME, namespace=self._namespace
                )
            except ValueError:
                raise InvalidTxnState("no transaction coordinator runs in this namespace") from None
        try:
            ref = submit(
                self._transactions.verify,
                producer_id,
                epoch,
                self.core.topic,
                self.core.partition,
                session=self._token,
            )
            verified = await await_ref(ref, LEADER_CALL_TIMEOUT_S)
        except BrokerError:
            self._transactions = None
            raise
        if not verified:
            raise InvalidTxnState(
                f"{self.core.name}: producer {producer_id} epoch {epoch} has no open "
                "transaction that includes this partition (ended, timed out, or "
                "add_partitions was skipped)"
            )
        self._check_leader()

    async def write_marker(
        self, producer_id: int, marker_epoch: int, commit: bool, *, session: str = ""
    ) -> int:
        """Write a transaction marker (the coordinator's call) and wait until the in-sync
        replicas have it; returns its offset.

        Raises:
            NotLeader, NotEnoughReplicas (retriable: the coordinator writes it again).
        """
        await self._internal(session, "write_marker")
        await self._ensure_role()
        self._check_leader()
        offset = self.core.write_marker(producer_id, marker_epoch, bool(commit))
        self._on_high_watermark(self.replica.advance_high_watermark())
        self._notify_data()
        await self._await_committed(offset + 1)
        return offset

    async def _make_room(self, *, refuse: bool = True) -> None:
        """Hold a write while rolled segments wait for Parquet beyond the memory bound.

        Sealing (a zstd Parquet write) is slower than appending on a small machine; without
        this wait a sustained burst piles rolled segments up in memory and the broker's memory
        grows with the backlog instead of staying at about two segments per partition. Waiting
        here slows producers to the disk's pace (back-pressure, as a Kafka quota's throttle
        does); only a wait past ``UNSEALED_WAIT_S`` refuses the write.
        """
        log = self.core.log
        limit = max(log.config.log_unsealed_bytes_max, log.config.segment_bytes)
        deadline = time.monotonic() + UNSEALED_WAIT_S
        while log.unsealed_bytes > limit:
            sealing = self._seal_in_background()
            remaining = deadline - time.monotonic()
            if sealing is None or remaining <= 0:
                if not refuse:
                    return
                raise BrokerBusy(
                    f"{self.core.name} holds {log.unsealed_bytes} bytes of rolled segments not "
                    f"yet written to Parquet (log.unsealed.bytes.max={limit}) after waiting "
                    f"{UNSEALED_WAIT_S} s; retry after a back-off"
                )
            # asyncio.wait never cancels the sealing task, unlike wait_for.
            await asyncio.wait({sealing}, timeout=remaining)

    async def _await_committed(self, offset: int) -> None:
        deadline = time.monotonic() + ACKS_ALL_TIMEOUT_MS / 1000
        epoch = self.replica.leader_epoch
        while self.core.high_watermark < offset:
            if not self.replica.is_leading(epoch):
                raise NotLeader(
                    f"{self.core.name}: lost the leadership before the write was replicated; "
                    "it may or may not be committed — retry (idempotence deduplicates)",
                    topic=self.core.topic,
                    partition=self.core.partition,
                    leader_epoch=epoch,
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

    def _on_high_watermark(self, moved: bool) -> None:
        if moved:
            self._notify_hw()
            self._notify_data()  # consumers wait for committed records, not appended ones
            if self.core.trace.uncommitted:
                self.core.trace.committed(
                    self.core.high_watermark, in_sync=sorted(self.replica.isr)
                )
                self.traces.start()

    def _trace_replication(self) -> int:
        """The trace topic's replication factor: as many copies as this partition has."""
        return max(len(self.replica.followers) + 1, 1)

    # --- fetch ----------------------------------------------------------------------------------

    async def fetch(
        self,
        offset: int,
        max_records: int,
        max_bytes: int,
        max_wait_ms: int = 0,
        read_committed: bool = False,
        flt: RecordFilter | None = None,
        consumer: str = "",
        client_id: str = "",
        *,
        session: str = "",
    ) -> FetchResponse:
        """Committed records from ``offset``; waits up to ``max_wait_ms`` for the first one.
        ``consumer`` names the reader in the trail of traced records.

        With a filter ``flt`` (``storage/record_filter.py``) only matching records are
        returned; ``next_offset`` moves past the others, and the long poll keeps waiting while
        new records do not match.

        The broker caps what one call may ask: ``FETCH_MAX_RECORDS`` records and
        ``FETCH_MAX_BYTES`` bytes per answer, and at most ``PARKED_FETCHES_MAX`` long polls
        waiting at once (more are answered at once, possibly empty), so parked polls never
        take the call slots producers need.

        ``read_committed`` reads below the last stable offset and hides aborted transactions;
        control records are hidden from every reader. ``next_offset`` in the answer moves the
        consumer past hidden records even when none is returned.

        Raises:
            NotLeader, OffsetOutOfRange; InvalidConfig for arguments of the wrong type;
            InvalidFilter; AuthenticationFailed, Unauthorized.
        """
        claims = await self._access(session, "read", "topic", self.core.topic)
        flt = checked_filter(flt)
        for name, value, low in (
            ("offset", offset, 0),
            ("max_records", max_records, 1),
            ("max_bytes", max_bytes, 1),
            ("max_wait_ms", max_wait_ms, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InvalidConfig(f"fetch {name} must be an int >= {low}, got {value!r}")
        started = time.perf_counter()
        max_records = min(max_records, FETCH_MAX_RECORDS)
        max_bytes = min(max_bytes, FETCH_MAX_BYTES)
        await self._ensure_role()
        self._check_leader()
        if self._parked >= PARKED_FETCHES_MAX:
            max_wait_ms = 0
        deadline = time.monotonic() + min(max_wait_ms, self._fetch_wait_cap_ms) / 1000
        self._parked += 1
        try:
            table, next_offset, woke_ns = await self._read_waiting(
                offset, max_records, max_bytes, deadline, bool(read_committed), flt
            )
        finally:
            self._parked -= 1
        traced = traced_rows(table)
        if len(traced):
            self.core.trace.delivered(table, traced, consumer=str(consumer)[:200])
            self.traces.start()
        response = FetchResponse(
            to_ipc(table),
            table.num_rows,
            self.core.high_watermark,
            self.core.log.log_start_offset,
            next_offset,
            self.core.last_stable_offset,
        )
        if STAMPS.enabled and table.num_rows:
            STAMPS.stamp("fetch_woke", offset, woke_ns)
            STAMPS.stamp("fetch_replied", offset)
        self.metrics.fetched(
            table.num_rows, response.records_ipc.size, time.perf_counter() - started
        )
        return await self._throttled(response, claims, client_id)

    async def _throttled(
        self, response: FetchResponse, claims: SessionClaims, client_id: str
    ) -> FetchResponse:
        """The answer, held back as long as the caller's fetch quota says."""
        size = response.records_ipc.size
        throttle_ms = self._guard.throttle_ms(claims, client_id, "consumer_byte_rate", size)
        if not throttle_ms:
            return response
        await asyncio.sleep(throttle_ms / 1000)
        return dataclasses.replace(response, throttle_time_ms=throttle_ms)

    async def _read_waiting(
        self,
        offset: int,
        max_records: int,
        max_bytes: int,
        deadline: float,
        read_committed: bool,
        flt: RecordFilter | None = None,
    ) -> tuple[pa.Table, int, int]:
        """The records, the next offset to read, and when the read that found them began
        (for ``hops``). Hidden records alone end the wait too: the consumer moves past them.
        Records a filter skipped do not: the read goes on from past them until one matches."""
        next_offset = offset
        while True:
            woke_ns = time.monotonic_ns()
            read_from = next_offset
            table, next_offset = self.core.read_with_next(
                read_from, max_records, max_bytes, read_committed, flt
            )
            remaining = deadline - time.monotonic()
            moved = table.num_rows or (next_offset > offset and flt is None)
            if moved or remaining <= 0 or self._data_arrived is None:
                break
            if next_offset > read_from:
                # A filtered scan stops every FILTER_SCAN_RECORDS: let producers in, go on.
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._data_arrived.wait(), remaining)
            self._check_leader()
        return table, next_offset, woke_ns

    # --- share groups (queue semantics; see share_groups.py) ------------------------------------

    async def share_fetch(
        self,
        group_id: str,
        member_id: str,
        max_records: int = 500,
        max_wait_ms: int = 0,
        reset: str = "latest",
        flt: RecordFilter | None = None,
        client_id: str = "",
        *,
        session: str = "",
    ) -> FetchResponse:
        """Deliver up to ``max_records`` records to a share-group member under a lock; waits up
        to ``max_wait_ms`` for the first. ``reset`` places a group new to this partition
        (Kafka's share.auto.offset.reset). The records carry a ``delivery_count`` column.
        ``flt`` is the group's filter (see ``ShareGroups.fetch``).

        Raises:
            NotLeader, InvalidGroupId, InvalidConfig, InvalidFilter; Unauthorized without read
            on the topic and on the share group.
        """
        await self._access(session, "read", "share_group", str(group_id))
        claims = await self._access(session, "read", "topic", self.core.topic)
        await self._ensure_role()
        self._check_leader()
        if self._parked >= PARKED_FETCHES_MAX:
            max_wait_ms = 0
        self._parked += 1
        try:
            response = await self.shares.fetch(
                group_id, member_id, max_records, max_wait_ms, reset, flt
            )
        finally:
            self._parked -= 1
        self.metrics.fetched(response.num_records, response.records_ipc.size, 0.0)
        return await self._throttled(response, claims, client_id)

    async def share_acknowledge(
        self, group_id: str, member_id: str, acknowledgements: list[Any], *, session: str = ""
    ) -> list[int]:
        """Apply a member's answers (``[(offsets, "accept"|"release"|"reject", error text)]``);
        durable when this returns. Returns the offsets not held by the member (see
        ``InvalidRecordState``); the rest are applied.

        Raises:
            NotLeader, InvalidGroupId, InvalidConfig; Unauthorized.
        """
        await self._access(session, "read", "share_group", str(group_id))
        await self._ensure_role()
        self._check_leader()
        return await self.shares.acknowledge(group_id, member_id, acknowledgements)

    async def share_describe(self, group_id: str, *, session: str = "") -> dict[str, Any]:
        """The share group's state on this partition (members, in flight, lag)."""
        await self._access(session, "describe", "share_group", str(group_id))
        await self._ensure_role()
        self._check_leader()
        return await self.shares.describe(group_id)

    async def share_reset(
        self, group_id: str, to: str, value: int | None = None, *, session: str = ""
    ) -> int:
        """Start the share group over here; raises GroupNotEmpty while records are locked."""
        await self._access(session, "read", "share_group", str(group_id))
        await self._ensure_role()
        self._check_leader()
        return await self.shares.reset(group_id, to, value)

    async def read_plan(self, start: int, end: int, *, session: str = "") -> dict[str, Any]:
        """Where committed records in ``[start, end)`` are, for bulk readers
        (``ray_broker.data``): sealed Parquet files on this node, and the offset from which only
        ``fetch`` has them. ``end`` is capped at the high watermark.

        Raises:
            NotLeader; OffsetOutOfRange for ``start`` outside the log.
        """
        import ray

        await self._access(session, "read", "topic", self.core.topic)
        await self._ensure_role()
        self._check_leader()
        self.core.log.check_offset(start)
        end = min(end, self.core.high_watermark)
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "end": end,
            "files": self.core.log.sealed_files(start, end),
            "memory_from": self.core.log.memory_start_offset,
        }

    async def hop_stamps(self, enable: bool, *, session: str = "") -> list[tuple[str, int, int]]:
        """Switch this actor process's latency stamps (``ray_broker.hops``) on or off and hand
        over those taken so far — a diagnostic for ``loadtest/latency.py --breakdown``."""
        await self._access(session, "alter", "cluster", "cluster")
        STAMPS.enabled = bool(enable)
        return STAMPS.drain()

    async def offsets(self, *, session: str = "") -> PartitionOffsets:
        await self._access(session, "describe", "topic", self.core.topic)
        await self._ensure_role()
        return self.core.offsets()

    async def offset_for_time(self, timestamp: int, *, session: str = "") -> tuple[int, int] | None:
        await self._access(session, "describe", "topic", self.core.topic)
        return self.core.offset_for_time(timestamp)

    # --- follower side --------------------------------------------------------------------------

    def _authorize(self, token: str) -> None:
        if self._token and not (
            isinstance(token, str) and hmac.compare_digest(token.encode(), self._token.encode())
        ):
            raise Unauthorized(
                f"{self.core.name}: role, epoch and replication calls are the Controller's and "
                "its partitions' own; this call did not carry their token"
            )

    def _check_epoch(self, epoch: int) -> None:
        """Raises FencedLeaderEpoch for a stale leader; a newer one demotes this replica."""
        _check_epoch_value(epoch)
        if self.replica.accept_leader(epoch):
            logger.warning("%s: fenced by leader epoch %d, stepping down", self.core.name, epoch)
            self._stop_links()
            self._notify_hw()

    async def epoch_state(
        self, epoch: int, *, token: str = ""
    ) -> tuple[list[tuple[int, int]], int]:
        """(leader-epoch entries, log end offset) for a new leader's divergence check."""
        self._authorize(token)
        self._start_background()
        self._check_epoch(epoch)
        return list(self.core.epochs.entries), self.core.log_end_offset

    async def truncate(
        self,
        epoch: int,
        offset: int,
        leader_log_start: int,
        expected_end: int | None = None,
        *,
        token: str = "",
    ) -> int:
        """Cut this follower's log at ``offset`` (or restart it at the leader's log start when it
        is too far behind); returns the new log end offset.

        ``expected_end`` is the log end the leader compared epochs against; if the log moved
        since (a late, repeated request), nothing is cut and the leader compares again.

        Raises:
            FencedLeaderEpoch: the sender is a stale leader.
            InvalidRecord: the log moved since the comparison.
            Unauthorized: the call does not carry the Controller's token.
        """
        self._authorize(token)
        self._check_epoch(epoch)
        if expected_end is not None and expected_end != self.core.log_end_offset:
            raise InvalidRecord(
                f"{self.core.name}: log end is {self.core.log_end_offset}, not {expected_end}; "
                "compare epochs again"
            )
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
        *,
        token: str = "",
    ) -> int:
        """Append the leader's records (offsets included); returns the new log end offset.

        Raises:
            FencedLeaderEpoch: the sender is an old leader.
            InvalidRecord: the records do not continue this log (the leader re-syncs).
            Unauthorized: the call does not carry the Controller's token.
        """
        self._authorize(token)
        self._start_background()
        self._check_epoch(epoch)
        table = from_ipc(records_ipc) if records_ipc is not None else None
        if table is not None and table.num_rows:
            # A follower never refuses its leader; waiting slows the leader's push instead.
            await self._make_room(refuse=False)
            self._check_epoch(epoch)
            self.core.append_replica(table, epochs)
            self._seal_in_background()
        if self.replica.follower_high_watermark(leader_high_watermark):
            self._notify_data()
        return self.core.log_end_offset

    # --- leader side: one sender per follower -----------------------------------------------------

    async def _replicate_to(self, link: FollowerLink) -> None:
        epoch = self.replica.leader_epoch
        synced = False
        while self.replica.is_leading(epoch):
            try:
                if not synced:
                    follower_end = await self._resync(link, epoch)
                    synced = True
                    self._on_high_watermark(
                        self.replica.on_follower_progress(
                            link.slot, follower_end, self.core.log_end_offset
                        )
                    )
                await self._push(link, epoch)
            except asyncio.CancelledError:
                raise
            except FencedLeaderEpoch:
                self._step_down(epoch + 1)
                return
            except InvalidRecord:
                synced = False  # the follower's log moved (it restarted): compare again
            except Exception as exc:
                error = classify(exc)
                if error.retriable:  # follower down or restarting: it stays out of the ISR
                    logger.debug("%s: replication to %s: %s", self.core.name, link.slot, error)
                else:  # a bug or a refused request: loud, but keep trying (never exit)
                    logger.error(
                        "%s: replication to %s failed: %s", self.core.name, link.slot, error
                    )
                synced = False
                await asyncio.sleep(REPLICA_RETRY_BACKOFF_MS / 1000)

    async def _resync(self, link: FollowerLink, epoch: int) -> int:
        follower_epochs, follower_end = await link.handle.epoch_state.remote(
            epoch, token=self._token
        )
        target = self.replica.truncation_point(follower_epochs, follower_end)
        if target is None:
            return follower_end
        return await link.handle.truncate.remote(
            epoch, target, self.core.log.log_start_offset, follower_end, token=self._token
        )

    async def _push(self, link: FollowerLink, epoch: int) -> None:
        progress = self.replica.followers.get(link.slot)
        if progress is None:
            return  # no longer leading (the loop ends)
        leader_end = self.core.log_end_offset
        if progress.log_end_offset >= leader_end:
            self.replica.mark_caught_up(link.slot)
            waiter = self._data_arrived
            assert waiter is not None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(waiter.wait(), REPLICA_IDLE_PUSH_MS / 1000)
            leader_end = self.core.log_end_offset
        table = None
        if progress.log_end_offset < leader_end:
            table = self.core.log.read(progress.log_end_offset, REPLICA_FETCH_RECORDS)
        payload = to_ipc(table) if table is not None and table.num_rows else None
        follower_end = await link.handle.replicate.remote(
            epoch, payload, self.core.epochs.entries, self.core.high_watermark, token=self._token
        )
        if self.replica.is_leading(epoch):
            self._on_high_watermark(
                self.replica.on_follower_progress(link.slot, follower_end, leader_end)
            )

    async def _isr_checks(self) -> None:
        """Shrink the ISR when a follower lags more than replica.lag.time.max.ms; expand it when
        a follower has caught up to the high watermark. The Controller records every change."""
        last_report = time.monotonic()
        while True:
            watching = self.replica.followers or self.replica.pending_since is not None
            await asyncio.sleep(
                (ISR_CHECK_INTERVAL_MS if watching else LONE_CHECK_INTERVAL_MS) / 1000
            )
            if time.monotonic() - last_report >= METRICS_INTERVAL_S:
                last_report = time.monotonic()
                self._report_state()
            if self._controller is None:
                continue
            try:
                lag_s = self.core.log.config.replica_lag_time_max_ms / 1000
                isr = self.replica.isr_proposal(lag_s, ALTER_ISR_TIMEOUT_S)
                if isr is not None:
                    await self._alter_isr(isr)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep checking: a dead ISR loop would freeze the ISR for good
                logger.exception("%s: ISR check failed", self.core.name)

    def _report_state(self) -> None:
        leading = self.replica.role == Role.LEADER
        self.metrics.state(
            self.core.log.log_end_offset,
            self.core.high_watermark,
            len(self.replica.isr) if leading else 0,
            len(self.replica.followers) + 1 if leading else 0,
        )

    async def _alter_isr(self, isr: set[str]) -> None:
        epoch = self.replica.leader_epoch
        try:
            accepted = await await_ref(
                submit(
                    self._controller.alter_isr,
                    self.core.topic,
                    self.core.partition,
                    epoch,
                    sorted(isr),
                    session=self._token,
                ),
                ALTER_ISR_TIMEOUT_S,
            )
        except BrokerError as exc:  # Controller restarting, or we were fenced
            logger.info("%s: ISR change to %s refused: %s", self.core.name, sorted(isr), exc)
            if self.replica.is_leading(epoch):
                self.replica.isr_answered()
                self._on_high_watermark(self.replica.advance_high_watermark())
            return
        if self.replica.apply_isr(epoch, accepted):
            self._on_high_watermark(moved=True)

    # --- housekeeping ---------------------------------------------------------------------------

    async def update_config(self, config: dict[str, Any], *, token: str = "") -> None:
        self._authorize(token)
        self.core.log.config = parse_config(TopicConfig, config)
        self.shares.update_settings()

    async def maintain(self, *, session: str = "") -> dict[str, int]:
        """Run housekeeping now (the background loop runs it every retention check interval):
        roll, retention, compaction, sealing, then moving old segments to remote storage."""
        await self._internal(session, "maintain")
        report = self.core.maintain()
        sealing = self._seal_in_background()
        if sealing is not None:
            await sealing
        report["segments_tiered"] = await self._tier()
        return report

    async def _tier(self) -> int:
        """Upload sealed segments past local.retention.ms (tiered storage); one run at a time.
        An upload that fails leaves the local file; the next round tries again."""
        if self._tiering:
            return 0
        self._tiering = True
        moved = 0
        try:
            log = self.core.log
            for segment in log.segments_to_tier(self.core.high_watermark):
                if self.core.deleted:
                    break
                remote = await asyncio.to_thread(log.upload, segment)
                moved += log.install_uploaded(segment, remote)
        finally:
            self._tiering = False
        return moved

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

    async def close(self, *, token: str = "") -> None:
        """Finish sealing and close the log's files (before the actor is killed)."""
        self._authorize(token)
        self._stop_links()
        for task in self._background:
            task.cancel()
        if self._sealing is not None:
            with contextlib.suppress(Exception):
                await self._sealing
        self.core.log.close()

    async def delete(self, *, token: str = "") -> None:
        await self.close(token=token)
        self.core.delete()
        self._notify_data()
