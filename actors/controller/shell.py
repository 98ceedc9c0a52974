"""What every group of the Controller's calls shares: the broker's settings and registries,
the live nodes, the mutex over metadata, and the partition replicas — where they are placed,
their actors, and the roles they are told.

The calls are grouped by concern over this shell: ``topic_calls.py`` (topic admin and
metadata), ``cluster_watch.py`` (probes, failover, ISR changes), the security API
(``actors/security/admin.py``) and ``actor.py`` (start-up, reassignment, shutdown), which
joins them into the ``Controller`` actor.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ray_broker._ray import submit
from ray_broker.actors.controller.liveness import Liveness
from ray_broker.actors.controller.partition_state import PartitionState
from ray_broker.actors.controller.topic_registry import TopicRecord, TopicRegistry
from ray_broker.actors.data_dir import (
    DataDirLock,
    internal_dir,
    internal_token,
    make_private,
)
from ray_broker.actors.lean_arrow import skip_pandas_probe
from ray_broker.actors.metadata_store import MetadataStore
from ray_broker.actors.partition.actor import PartitionActor
from ray_broker.actors.security.access_guard import SecurityPolicy
from ray_broker.actors.security.guarded import GuardedActor
from ray_broker.actors.security.registry import SecurityRegistry
from ray_broker.config import (
    CONTROLLER_NAME,
    GROUP_COORDINATOR_NAME,
    HEAD_NODE_RESOURCE,
    INTERNAL_DIR,
    TRANSACTION_COORDINATOR_NAME,
    BrokerConfig,
    parse_config,
)
from ray_broker.errors import (
    BrokerError,
    DataDirInUse,
    UnknownTopicOrPartition,
)
from ray_broker.gc_pause import freeze_loaded_heap
from ray_broker.metrics import ControllerMetrics

logger = logging.getLogger(__name__)


PREFERRED_LEADER_EVERY_ROUNDS = 20
# Followers and unreplicated leaders are probed once a second at the default interval (leaders
# with followers every round): 4 probes a second cost an idle partition actor ~0.5% of a core.
PROBE_ALL_EVERY_ROUNDS = 4
TRANSACTIONS_NUDGE_EVERY_ROUNDS = 20  # every 5 s at the default interval
ROLE_CHANGE_TIMEOUT_S = 2.0
REPLICA_START_TIMEOUT_S = 60.0
# A follower that has not answered the Controller's probes for this long is started again.
REPLICA_SILENT_RESTART_S = 30.0
DESCRIBE_TIMEOUT_S = 2


def live_nodes() -> dict[str, bool]:
    """Live Ray nodes → whether each is the head node. Blocking (a GCS request): the Controller
    calls it on a worker thread, never on its event loop."""
    return {
        node["NodeID"]: HEAD_NODE_RESOURCE in node.get("Resources", {})
        for node in ray.nodes()
        if node.get("Alive")
    }


class ControllerShell(GuardedActor):
    """The state and replica handling under every call group (see the module docstring)."""

    def __init__(self, broker_config: dict[str, Any], namespace: str) -> None:
        skip_pandas_probe()
        freeze_loaded_heap()
        self.config: BrokerConfig = parse_config(BrokerConfig, broker_config)
        self.namespace = namespace
        self.data_dir = Path(self.config.data_dir)
        make_private()
        self._metrics = ControllerMetrics(namespace)
        # Refused when another broker owns the directory: ready() raises DataDirInUse (an
        # error in __init__ would reach the caller only as "actor died"), connect() reports it
        # and stops this actor; nothing of the other broker's files is touched.
        self._refusal: DataDirInUse | None = None
        try:
            self._dir_lock = DataDirLock(self.data_dir, namespace)
        except DataDirInUse as exc:
            self._refusal = exc
            self._init_guard("", lambda: self)  # no keys: every checked call is refused
            self._guard.apply(SecurityPolicy(version=0, enabled=True))
            return
        self._token = internal_token(self.data_dir)
        self.registry = TopicRegistry(
            MetadataStore(internal_dir(self.data_dir, "cluster_metadata"))
        )
        self.security = SecurityRegistry(
            MetadataStore(internal_dir(self.data_dir, "security")),
            self.data_dir / INTERNAL_DIR / "session.keys",
            enable=self.config.security_enabled,
            superusers=self.config.super_users,
            session_lifetime_ms=self.config.session_lifetime_ms,
            quota_window_ms=self.config.quota_window_size_ms,
            quota_windows=self.config.quota_window_num,
        )
        self._init_guard(self._token, lambda: self)
        self._guard.apply(self.security.policy())
        self._actors: dict[tuple[str, int, str], Any] = {}  # (topic id, partition, slot)
        self._liveness = Liveness(
            self.config.leader_probe_timeout_ms / 1000, REPLICA_SILENT_RESTART_S
        )
        self._lock: asyncio.Lock | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._nodes: dict[str, bool] = live_nodes()  # refreshed off the loop every check

    async def _refresh_nodes(self) -> None:
        self._nodes = await asyncio.to_thread(live_nodes)

    def _alive_nodes(self, include_head: bool = True) -> list[str]:
        """Live nodes as of the last refresh (at most one check interval old)."""
        return sorted(n for n, head in self._nodes.items() if include_head or not head)

    def _current(self, record: TopicRecord) -> TopicRecord:
        """``record`` if it is still the live topic of its name (not deleted or re-created
        while the caller awaited).

        Raises:
            UnknownTopicOrPartition: the topic was deleted.
        """
        if self.registry.topics.get(record.name) is not record:
            raise UnknownTopicOrPartition(f"topic {record.name!r} was deleted")
        return record

    def _mutex(self) -> asyncio.Lock:
        if self._refusal is not None:
            raise self._refusal
        if self._lock is None:
            self._lock = asyncio.Lock()
        if self._monitor is None:
            self._monitor = asyncio.get_running_loop().create_task(self._watch_cluster())
        return self._lock

    # --- placement and replica actors -----------------------------------------------------------

    def _directory(self, record: TopicRecord, partition: int, slot: str) -> Path:
        base = self.data_dir / record.name / f"partition={partition}"
        # One replica keeps the plain Hive layout; with several, each has its own directory
        # (they may share a file system, as nodes on one machine do).
        return base if record.replication_factor == 1 else base / f"replica={slot}"

    def _node_load(self) -> dict[str, list[int]]:
        """Per live node: [replicas, leaders] it hosts, to spread new ones evenly."""
        load = {node: [0, 0] for node in self._alive_nodes(self.config.replicas_on_head_node)}
        for record in self.registry.topics.values():
            for state in record.states:
                for slot, node in state.nodes.items():
                    if node in load:
                        load[node][0] += 1
                        load[node][1] += slot == state.leader
        return load

    def _choose_nodes(self, count: int, exclude: set[str]) -> list[str]:
        load = self._node_load()
        candidates = [n for n in load if n not in exclude]
        # Fewest leaders first (the first node becomes the preferred leader), then fewest
        # replicas: leaders and data spread as partitions are added.
        chosen = sorted(candidates, key=lambda n: (load[n][1], load[n][0], n))[:1]
        rest = sorted((n for n in candidates if n not in chosen), key=lambda n: (load[n][0], n))
        return (chosen + rest)[:count]

    def _place(self, record: TopicRecord) -> bool:
        """Give new partitions their replicas; returns True if anything was placed."""
        changed = False
        while len(record.states) < record.partitions:
            nodes = self._choose_nodes(record.replication_factor, set())
            record.states.append(PartitionState.placed(nodes))
            changed = True
        if changed:
            self.registry.save(record)
        return changed

    def _actor(self, record: TopicRecord, partition: int, slot: str) -> Any:
        """The replica's actor handle: cached, found by name, or started on its node."""
        key = (record.topic_id, partition, slot)
        handle = self._actors.get(key)
        if handle is not None:
            return handle
        self._current(record)  # never start actors for a topic deleted meanwhile
        name = record.actor_name(partition, slot)
        try:
            handle = ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            node = record.states[partition].nodes[slot]
            handle = (
                ray.remote(PartitionActor)
                .options(
                    name=name,
                    namespace=self.namespace,
                    lifetime="detached",
                    max_restarts=-1,
                    max_task_retries=0,  # producers retry with idempotence, in order
                    num_cpus=0,
                    max_concurrency=1000,
                    # Pinned beside its data: a crash restarts it on the same node; a dead node
                    # is handled by failover instead.
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
                )
                .remote(
                    record.name,
                    partition,
                    str(self._directory(record, partition, slot)),
                    record.config_overrides,
                    self.config.log_retention_check_interval_ms,
                    self.config.fetch_max_wait_cap_ms,
                    slot,
                    ray.get_actor(CONTROLLER_NAME, namespace=self.namespace),
                    self._token,
                    self.namespace,
                )
            )
        self._actors[key] = handle
        return handle

    async def _start_partitions(self, record: TopicRecord) -> None:
        """Make sure every replica runs and knows its role."""
        self._place(record)
        fresh = [
            (p, slot)
            for p, state in enumerate(record.states)
            for slot in state.replicas
            if (record.topic_id, p, slot) not in self._actors
        ]
        if not fresh:
            return
        for p, slot in fresh:
            self._actor(record, p, slot)
        readiness = [
            asyncio.ensure_future(self._actor(record, p, slot).ready.remote(session=self._token))
            for p, slot in fresh
        ]
        await asyncio.wait(readiness, timeout=REPLICA_START_TIMEOUT_S)
        for p in sorted({p for p, _ in fresh}):
            await self._push_roles(record, p)

    async def _push_roles(self, record: TopicRecord, partition: int) -> None:
        state = record.states[partition]
        alive = set(self._alive_nodes())
        replicas = {
            slot: self._actor(record, partition, slot)
            for slot in state.replicas
            if state.nodes.get(slot) in alive
        }
        calls = []
        for slot, handle in replicas.items():
            try:
                if slot == state.leader:
                    calls.append(
                        submit(
                            handle.become_leader,
                            state.epoch,
                            replicas,
                            state.isr,
                            token=self._token,
                        )
                    )
                else:
                    calls.append(submit(handle.become_follower, state.epoch, token=self._token))
            except BrokerError as exc:  # its node is leaving: the next check handles it
                logger.info("%s-%d: role for %s not sent: %s", record.name, partition, slot, exc)
        # Bounded: a hung replica (its call stays queued and lands when it wakes up) must not
        # hold up the Controller, which would stall every client's metadata request.
        tasks = [asyncio.ensure_future(call) for call in calls]
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=ROLE_CHANGE_TIMEOUT_S)
        for task in done:
            if task.exception() is not None:
                logger.info(
                    "%s-%d: role change not delivered: %s", record.name, partition, task.exception()
                )
        if pending:
            logger.info(
                "%s-%d: %d replica(s) did not confirm their role yet",
                record.name,
                partition,
                len(pending),
            )

    def _policy_targets(self) -> list[Any]:
        return list(self._actors.values())

    async def _push_many(self, pushes: list[tuple[TopicRecord, int]]) -> None:
        """Push roles of several partitions at once (each bounded by ROLE_CHANGE_TIMEOUT_S)."""
        if pushes:
            await asyncio.gather(*(self._push_roles(record, p) for record, p in pushes))

    @staticmethod
    def _kill(handle: Any, what: str) -> None:
        try:
            ray.kill(handle, no_restart=True)
        except Exception as exc:  # already gone with its node: nothing left to stop
            logger.info("stopping %s: %s", what, exc)

    def _nudge_group_coordinator(self) -> None:
        """Tell the group coordinator topics changed, so groups rebalance now (best effort: it
        also polls)."""
        try:
            coordinator = ray.get_actor(GROUP_COORDINATOR_NAME, namespace=self.namespace)
        except ValueError:
            return
        coordinator.topics_changed.remote(session=self._token)

    def _nudge_transaction_coordinator(self) -> None:
        """Wake a restarted transaction coordinator that no producer calls any more: it must
        still finish decided transactions and abort expired ones (best effort)."""
        try:
            coordinator = ray.get_actor(TRANSACTION_COORDINATOR_NAME, namespace=self.namespace)
        except ValueError:
            return  # no transactional producer ever ran
        coordinator.tick.remote(session=self._token)
