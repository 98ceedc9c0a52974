"""The transaction coordinator actor: KIP-98 two-phase commit over partition actors.

Decisions are ``TransactionStates``' (``transaction_state.py`` here); this actor persists
them and does the I/O. State lives in a durable compacted log on the head node
(``__internal/transaction_state``, the same ``MetadataStore`` the group coordinator keeps
offsets in); every change is fsynced before it is answered. Finishing a transaction is:

1. write PrepareCommit / PrepareAbort durably — from here the outcome is decided;
2. write a marker into every partition of the transaction (waiting for its in-sync replicas)
   and end the group offsets it staged;
3. write CompleteCommit / CompleteAbort with the producer's next epoch.

The actor restarts with ``max_restarts=-1``; a restarted coordinator finishes every
transaction it finds in a Prepare state, and a housekeeping loop aborts transactions older
than their ``transaction.timeout.ms``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import ray

from ray_broker._ray import await_ref, classify, submit
from ray_broker.actors.coordination.transaction_state import MarkerPlan, TransactionStates
from ray_broker.actors.data_dir import internal_dir, internal_token, make_private
from ray_broker.actors.lean_arrow import skip_pandas_probe
from ray_broker.actors.metadata_store import MetadataStore
from ray_broker.actors.security.guarded import GuardedActor
from ray_broker.config import (
    CONTROLLER_NAME,
    GROUP_COORDINATOR_NAME,
    TRANSACTIONAL_ID_SPACE,
    BrokerConfig,
    parse_config,
    validate_transactional_id,
)
from ray_broker.errors import (
    BrokerError,
    BrokerNotRunning,
    ConcurrentTransactions,
    InvalidTxnState,
    TopicNotFound,
)
from ray_broker.gc_pause import freeze_loaded_heap

logger = logging.getLogger(__name__)

PRODUCER_ID_KEY = "__producer_ids__"
PRODUCER_ID_BLOCK = 1_000
MARKER_CALL_TIMEOUT_S = 35.0  # a marker waits for the in-sync replicas (acks=all: 30 s)
MARKER_RETRY_BACKOFF_S = 0.2
# How long end_txn keeps writing markers before answering a retriable error (the transaction
# stays decided and the housekeeping loop goes on writing them).
END_TXN_PATIENCE_S = 60.0
EXPIRY_CHECK_INTERVAL_S = 1.0


def _txn_key(transactional_id: str) -> str:
    return "txn:" + transactional_id


class TransactionCoordinator(GuardedActor):
    """All transactional ids of one broker namespace."""

    def __init__(self, broker_config: dict[str, Any], namespace: str) -> None:
        skip_pandas_probe()
        freeze_loaded_heap()
        self.config: BrokerConfig = parse_config(BrokerConfig, broker_config)
        self.namespace = namespace
        make_private()
        self.store = MetadataStore(internal_dir(Path(self.config.data_dir), "transaction_state"))
        documents = self.store.load()
        self._next_producer_id = 0
        self._producer_id_limit = 0
        self._next_block = documents.get(PRODUCER_ID_KEY, {}).get("next_block", 0)
        self.states = TransactionStates(self._allocate_producer_id)
        for key, document in documents.items():
            if key.startswith("txn:"):
                self.states.load(key.removeprefix("txn:"), document)
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: asyncio.Task[None] | None = None
        self._topics: dict[str, Any] = {}
        self._group_coordinator: Any = None
        self._token = internal_token(Path(self.config.data_dir))
        self._init_guard(
            self._token, lambda: ray.get_actor(CONTROLLER_NAME, namespace=self.namespace)
        )

    # --- producer ids ---------------------------------------------------------------------------

    def _allocate_producer_id(self) -> int:
        """The next id of the current block; a new block is reserved durably first, so no id
        is handed out twice across restarts (a restart skips the rest of its block)."""
        if self._next_producer_id >= self._producer_id_limit:
            block = self._next_block
            if (block + 1) * PRODUCER_ID_BLOCK > TRANSACTIONAL_ID_SPACE:
                raise InvalidTxnState("transactional producer ids are exhausted")
            self.store.put(PRODUCER_ID_KEY, {"next_block": block + 1})
            self._next_block = block + 1
            self._next_producer_id = block * PRODUCER_ID_BLOCK
            self._producer_id_limit = (block + 1) * PRODUCER_ID_BLOCK
        pid = self._next_producer_id
        self._next_producer_id += 1
        return pid

    # --- background -----------------------------------------------------------------------------

    def _start(self) -> None:
        if self._background is None:
            self._background = asyncio.get_running_loop().create_task(self._housekeeping())

    async def _housekeeping(self) -> None:
        """Finish transactions a restart left in a Prepare state, then abort expired ones;
        survives any error (a stuck transaction would hold every read_committed reader)."""
        for plan in self.states.preparing():
            self._spawn_finish(plan, timed_out=False)
        while True:
            await asyncio.sleep(EXPIRY_CHECK_INTERVAL_S)
            try:
                for plan in self.states.expired():
                    logger.info("aborting transaction %s: timed out", plan.transactional_id)
                    await self._persist(plan.transactional_id)
                    self._spawn_finish(plan, timed_out=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("transaction housekeeping round failed: %s", classify(exc))

    def _spawn_finish(self, plan: MarkerPlan, timed_out: bool) -> None:
        async def finish() -> None:
            while True:
                try:
                    async with self._lock(plan.transactional_id):
                        await self._finish(plan, timed_out, deadline=None)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    logger.warning("finishing %s failed: %s", plan.transactional_id, exc)
                    await asyncio.sleep(MARKER_RETRY_BACKOFF_S)

        asyncio.get_running_loop().create_task(finish())

    def _lock(self, transactional_id: str) -> asyncio.Lock:
        lock = self._locks.get(transactional_id)
        if lock is None:
            lock = self._locks[transactional_id] = asyncio.Lock()
        return lock

    async def _persist(self, transactional_id: str) -> None:
        meta = self.states.txns[transactional_id]
        await asyncio.to_thread(self.store.put, _txn_key(transactional_id), meta.to_document())

    # --- the producer's calls -------------------------------------------------------------------

    async def init_producer_id(
        self, transactional_id: str, timeout_ms: int, *, session: str = ""
    ) -> tuple[int, int]:
        """(producer id, epoch) for ``transactional_id``, fencing its earlier incarnations and
        aborting a transaction they left open.

        Raises:
            InvalidTransactionalId: not a printable id of 1..249 characters.
            InvalidTransactionTimeout: a timeout outside [1, 15 minutes].
            Unauthorized: without write on the transactional id.
        """
        validate_transactional_id(transactional_id)
        await self._access(session, "write", "transactional_id", transactional_id)
        self._start()
        async with self._lock(transactional_id):
            unfinished = self.states.pending_plan(transactional_id)
            if unfinished is not None:
                await self._finish(unfinished, timed_out=False, deadline=None)
            meta, abort = self.states.init_producer_id(transactional_id, timeout_ms)
            if abort is not None:
                await self._persist(transactional_id)
                await self._finish(abort, timed_out=False, deadline=None)
                meta, _ = self.states.init_producer_id(transactional_id, timeout_ms)
            await self._persist(transactional_id)
            return meta.producer_id, meta.epoch

    async def add_partitions(
        self,
        transactional_id: str,
        producer_id: int,
        epoch: int,
        partitions: list[tuple[str, int]],
        *,
        session: str = "",
    ) -> None:
        """Add partitions to the open transaction (starting it) before their first write.

        Raises:
            ProducerFenced, TransactionTimedOut, TransactionalIdNotFound, TopicNotFound,
            ConcurrentTransactions (retriable); Unauthorized.
        """
        await self._access(session, "write", "transactional_id", str(transactional_id))
        self._start()
        for topic, partition in partitions:
            meta = await self._topic(topic)
            if not 0 <= int(partition) < meta.num_partitions:
                raise TopicNotFound(f"partition {topic}-{partition} does not exist", topic=topic)
        async with self._lock(transactional_id):
            self.states.add(transactional_id, producer_id, epoch, partitions)
            await self._persist(transactional_id)

    async def add_offsets(
        self,
        transactional_id: str,
        producer_id: int,
        epoch: int,
        group_id: str,
        *,
        session: str = "",
    ) -> None:
        """Add a consumer group's offsets to the open transaction (its commit marker will
        make them visible).

        Raises:
            ProducerFenced, TransactionTimedOut, TransactionalIdNotFound, InvalidTxnState,
            ConcurrentTransactions (retriable); Unauthorized.
        """
        await self._access(session, "write", "transactional_id", str(transactional_id))
        await self._access(session, "read", "group", str(group_id))
        self._start()
        if not isinstance(group_id, str) or not group_id:
            raise InvalidTxnState(f"group_id must be a non-empty str, got {group_id!r}")
        async with self._lock(transactional_id):
            self.states.add(transactional_id, producer_id, epoch, [], group=group_id)
            await self._persist(transactional_id)

    async def end_txn(
        self,
        transactional_id: str,
        producer_id: int,
        epoch: int,
        commit: bool,
        *,
        allow_empty: bool = True,
        session: str = "",
    ) -> tuple[int, int]:
        """Commit or abort: returns (producer id, epoch) for the producer's next transaction
        once every marker is written. ``allow_empty`` False (Kafka clients) refuses to end a
        transaction nothing was added to, as a Kafka broker does; the Python producer ends
        even an empty one, which moves its epoch on.

        Raises:
            ProducerFenced, TransactionTimedOut, TransactionalIdNotFound, InvalidTxnState,
            ConcurrentTransactions: markers could not all be written yet (retriable: the
                outcome is decided and the coordinator goes on writing them).
            Unauthorized.
        """
        await self._access(session, "write", "transactional_id", str(transactional_id))
        self._start()
        async with self._lock(transactional_id):
            meta = self.states.txns.get(transactional_id)
            plan = self.states.pending_plan(transactional_id)
            if plan is not None and (meta.producer_id, meta.epoch) == (producer_id, epoch):
                if plan.commit != bool(commit):  # a retried end of a decided transaction
                    raise InvalidTxnState(
                        f"transaction {transactional_id!r} is already in {meta.state.value}"
                    )
            else:
                meta, plan = self.states.end(
                    transactional_id, producer_id, epoch, bool(commit), allow_empty=allow_empty
                )
                await self._persist(transactional_id)
            if plan is not None:
                deadline = time.monotonic() + END_TXN_PATIENCE_S
                try:
                    await self._finish(plan, timed_out=False, deadline=deadline)
                except ConcurrentTransactions:
                    # Decided but not all markers written (a partition without a leader): go on
                    # in the background, so the transaction ends even if the producer is gone.
                    self._spawn_finish(plan, timed_out=False)
                    raise
            meta = self.states.txns[transactional_id]
            return meta.producer_id, meta.epoch

    async def tick(self, *, session: str = "") -> None:
        """The Controller's periodic nudge: a coordinator restarted after a crash starts its
        housekeeping (finish Prepare* transactions, abort expired ones) even if no producer
        calls it again."""
        await self._internal(session, "tick")
        self._start()

    async def verify(
        self, producer_id: int, epoch: int, topic: str, partition: int, *, session: str = ""
    ) -> bool:
        """A partition's KIP-890 check before a producer epoch's first transactional write."""
        await self._internal(session, "verify")
        self._start()
        return self.states.verify(producer_id, epoch, topic, partition)

    async def describe(self, *, session: str = "") -> list[dict[str, Any]]:
        """The transactional ids the caller may describe, and their state."""
        claims = await self._who(session)
        return [
            {"transactional_id": tid, **meta.to_document()}
            for tid, meta in sorted(self.states.txns.items())
            if self._guard.permits(claims, "describe", "transactional_id", tid)
        ]

    # --- markers --------------------------------------------------------------------------------

    async def _finish(self, plan: MarkerPlan, timed_out: bool, deadline: float | None) -> None:
        """Write every marker of a decided transaction, then complete it durably."""
        meta = self.states.txns.get(plan.transactional_id)
        if meta is None or not meta.state.preparing or meta.producer_id != plan.producer_id:
            return  # finished meanwhile
        calls = [self._write_marker(plan, topic, p, deadline) for topic, p in plan.partitions]
        calls += [self._end_group(plan, group, deadline) for group in plan.groups]
        await asyncio.gather(*calls)
        self.states.complete(plan, timed_out=timed_out)
        await self._persist(plan.transactional_id)

    async def _topic(self, topic: str) -> Any:
        meta = self._topics.get(topic)
        if meta is None:
            controller = ray.get_actor(CONTROLLER_NAME, namespace=self.namespace)
            ref = submit(
                controller.metadata, topic, unavailable=BrokerNotRunning, session=self._token
            )
            meta = self._topics[topic] = await await_ref(ref, 30.0, BrokerNotRunning)
        return meta

    async def _write_marker(
        self, plan: MarkerPlan, topic: str, partition: int, deadline: float | None
    ) -> None:
        while True:
            try:
                meta = await self._topic(topic)
                ref = submit(
                    meta.leader(partition).write_marker,
                    plan.producer_id,
                    plan.marker_epoch,
                    plan.commit,
                    session=self._token,
                )
                await await_ref(ref, MARKER_CALL_TIMEOUT_S)
                return
            except TopicNotFound:
                return  # deleted meanwhile: nothing left to mark
            except BrokerError as exc:
                self._topics.pop(topic, None)  # the leader moved: ask again
                if not exc.retriable or (deadline is not None and time.monotonic() > deadline):
                    raise ConcurrentTransactions(
                        f"marker for {topic}-{partition} of {plan.transactional_id!r} not "
                        f"written yet ({exc}); the outcome is decided, retry"
                    ) from None
                await asyncio.sleep(MARKER_RETRY_BACKOFF_S)

    async def _end_group(self, plan: MarkerPlan, group: str, deadline: float | None) -> None:
        while True:
            try:
                if self._group_coordinator is None:
                    self._group_coordinator = ray.get_actor(
                        GROUP_COORDINATOR_NAME, namespace=self.namespace
                    )
                ref = submit(
                    self._group_coordinator.end_txn,
                    group,
                    plan.producer_id,
                    plan.commit,
                    session=self._token,
                )
                await await_ref(ref, MARKER_CALL_TIMEOUT_S)
                return
            except (BrokerError, ValueError) as exc:
                self._group_coordinator = None  # restarting, or looked up too early
                if deadline is not None and time.monotonic() > deadline:
                    raise ConcurrentTransactions(
                        f"offsets of group {group!r} in {plan.transactional_id!r} not "
                        f"committed yet ({exc}); the outcome is decided, retry"
                    ) from None
                await asyncio.sleep(MARKER_RETRY_BACKOFF_S)

    async def shutdown(self, *, session: str = "") -> None:
        await self._access(session, "alter", "cluster", "cluster")
        if self._background is not None:
            self._background.cancel()
        self.store.close()
