"""The Controller: one named, detached actor per broker namespace that owns topic metadata.

It validates and persists metadata through the ``TopicRegistry``, places each partition's
replicas on distinct live Ray nodes (spreading preferred leaders), starts one ``PartitionActor``
per replica, tells them their roles, and watches the cluster: when a node dies it elects new
leaders from the in-sync replicas (bumping the leader epoch, which fences the old leader),
replaces the lost replicas on other live nodes, and later moves leadership back to preferred
replicas. Clients ask it for metadata (leader handles) and then talk to partitions directly.

Created with ``max_restarts=-1`` on the head node (where its metadata log lives): a restarted
Controller reloads its metadata log and re-attaches to the partition actors by name, starting
any that are missing (after a whole-cluster restart), which rebuild themselves from their files.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnschedulableError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ray_broker._ray import await_ref, submit
from ray_broker.actors.controller.failover import plan_partition
from ray_broker.actors.controller.partition_state import PartitionState
from ray_broker.actors.controller.topic_registry import TopicRecord, TopicRegistry
from ray_broker.actors.data_dir import (
    DataDirLock,
    claim_topic_dir,
    internal_dir,
    internal_token,
    make_private,
    release_topic_dir,
)
from ray_broker.actors.lean_arrow import skip_pandas_probe
from ray_broker.actors.metadata_store import MetadataStore
from ray_broker.actors.partition.actor import PartitionActor
from ray_broker.actors.security.access_guard import SecurityPolicy
from ray_broker.actors.security.admin import SecurityAdmin
from ray_broker.actors.security.registry import SecurityRegistry
from ray_broker.actors.security.session_tokens import SessionClaims
from ray_broker.config import (
    CLIENT_VISIBLE_CONFIG,
    CONTROLLER_NAME,
    DELAY_TOPIC,
    GROUP_COORDINATOR_NAME,
    HEAD_NODE_RESOURCE,
    INTERNAL_DIR,
    TRANSACTION_COORDINATOR_NAME,
    BrokerConfig,
    parse_config,
    validate_topic_name,
)
from ray_broker.errors import (
    BrokerError,
    BrokerTimeoutError,
    DataDirInUse,
    InvalidReplicationFactor,
    TopicExists,
    UnknownTopicOrPartition,
)
from ray_broker.metrics import ControllerMetrics
from ray_broker.structs import PartitionInfo, TopicDescription, TopicMetadata

logger = logging.getLogger(__name__)


def live_nodes() -> dict[str, bool]:
    """Live Ray nodes → whether each is the head node. Blocking (a GCS request): the Controller
    calls it on a worker thread, never on its event loop."""
    return {
        node["NodeID"]: HEAD_NODE_RESOURCE in node.get("Resources", {})
        for node in ray.nodes()
        if node.get("Alive")
    }


class Controller(SecurityAdmin):
    """Topic metadata, replica placement and leader election for one broker namespace; the
    owner of the security rules (``security_admin.py``)."""

    def __init__(self, broker_config: dict[str, Any], namespace: str) -> None:
        skip_pandas_probe()
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
        self._unanswered: dict[tuple[str, int], float] = {}  # leader probes: first miss time
        self._silent: dict[tuple[str, int, str], float] = {}  # any replica: first miss time
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

    # --- failure handling -----------------------------------------------------------------------

    async def _watch_cluster(self) -> None:
        """Every check interval: fail over partitions whose leader's node died, replace replicas
        on dead nodes, and move leadership back to preferred replicas."""
        rounds = 0
        while True:
            await asyncio.sleep(self.config.controller_check_interval_ms / 1000)
            rounds += 1
            try:
                await self._refresh_nodes()
                hung, dead = await self._probe_replicas(
                    everyone=rounds % PROBE_ALL_EVERY_ROUNDS == 0
                )
                async with self._mutex():
                    pushes = await self._heal(
                        prefer=rounds % PREFERRED_LEADER_EVERY_ROUNDS == 0, hung=hung
                    )
                    pushes += [p for p in self._restart_dead(dead) if p not in pushes]
                await self._push_many(pushes)
                if rounds % TRANSACTIONS_NUDGE_EVERY_ROUNDS == 0:
                    self._nudge_transaction_coordinator()
            except Exception:  # keep watching; the next round retries
                logger.exception("cluster check failed")

    async def _probe_replicas(
        self, everyone: bool = True
    ) -> tuple[set[tuple[str, int]], set[tuple[str, int, str]]]:
        """Ask replicas whether they are up. Returns the leaders that have not answered for
        leader.probe.timeout.ms (hung, or restarting) and the replicas to start again: gone for
        good (died, or could never be scheduled on its node) or followers silent for
        REPLICA_SILENT_RESTART_S — so a replacement that failed to start does not leave its
        partition short of replicas.

        Leaders of replicated partitions are probed every round (their failover waits on it);
        the rest only when ``everyone``: each probe is a Ray call that costs the idle replica
        and the Controller CPU, and a lone replica or a follower loses nothing by being found
        dead a second later."""
        leaders = {
            (record.topic_id, p): state.leader
            for record in self.registry.topics.values()
            if record.replication_factor > 1  # nobody to fail over to otherwise
            for p, state in enumerate(record.states)
        }
        probes = {}
        for (topic_id, p, slot), handle in list(self._actors.items()):
            if not everyone and leaders.get((topic_id, p)) != slot:
                continue
            try:
                probes[(topic_id, p, slot)] = submit(handle.ready, session=self._token)
            except BrokerError:
                continue  # cannot even submit (its node is leaving): the next round sees it
        timeout = self.config.controller_check_interval_ms / 1000
        answers = await asyncio.gather(
            *(asyncio.wait_for(ref, timeout) for ref in probes.values()), return_exceptions=True
        )
        now = asyncio.get_running_loop().time()
        hung, dead = set(), set()
        for key in set(self._silent) - set(self._actors):
            del self._silent[key]
        for (topic_id, p, slot), answer in zip(probes, answers, strict=True):
            if isinstance(answer, (ActorDiedError, ActorUnschedulableError)):
                dead.add((topic_id, p, slot))
            elif not isinstance(answer, BaseException):
                self._silent.pop((topic_id, p, slot), None)
            elif leaders.get((topic_id, p)) != slot:
                # A follower silent this long never started (its creation stays pending, as
                # seen after many node changes) or is wedged: start it again. A leader is the
                # failover's to handle.
                first = self._silent.setdefault((topic_id, p, slot), now)
                if now - first >= REPLICA_SILENT_RESTART_S:
                    dead.add((topic_id, p, slot))
                    del self._silent[(topic_id, p, slot)]
            if leaders.get((topic_id, p)) != slot:
                continue
            key = (topic_id, p)
            if not isinstance(answer, BaseException):
                self._unanswered.pop(key, None)
                continue
            first = self._unanswered.setdefault(key, now)
            if now - first >= self.config.leader_probe_timeout_ms / 1000:
                hung.add(key)
                del self._unanswered[key]
        return hung, dead

    def _restart_dead(self, dead: set[tuple[str, int, str]]) -> list[tuple[TopicRecord, int]]:
        """Start replicas again whose actor is gone while their node lives (caller holds the
        mutex); those on dead nodes, and leaders of replicated partitions, are the failover
        plan's to handle."""
        records = {record.topic_id: record for record in self.registry.topics.values()}
        alive_nodes = set(self._alive_nodes())
        pushes = []
        for topic_id, p, slot in sorted(dead):
            handle = self._actors.pop((topic_id, p, slot), None)
            record = records.get(topic_id)
            if record is None or p >= len(record.states):
                continue
            state = record.states[p]
            if (
                slot not in state.replicas
                # A leader with others to take over is the failover's (probed, elected, fenced);
                # a lone replica can only come back where its data is.
                or (slot == state.leader and record.replication_factor > 1)
                or state.nodes.get(slot) not in alive_nodes
            ):
                continue
            logger.warning("%s-%d: replica %s is gone; starting it again", record.name, p, slot)
            if handle is not None:
                self._kill(handle, f"{record.name}-{p} replica {slot}")
            self._actor(record, p, slot)
            pushes.append((record, p))
        return pushes

    async def _heal(
        self, prefer: bool, hung: Collection[tuple[str, int]] = frozenset()
    ) -> list[tuple[TopicRecord, int]]:
        """Apply the failover plan to every partition (caller holds the mutex); returns the
        partitions whose roles must be pushed — after the mutex is released, so metadata
        requests never wait behind role changes of many partitions."""
        alive_nodes = set(self._alive_nodes())
        pushes = []
        offline = 0
        for record in list(self.registry.topics.values()):
            for p, state in enumerate(record.states):
                leader_before = (state.leader, state.epoch)
                plan = plan_partition(
                    state,
                    alive_nodes,
                    replication_factor=record.replication_factor,
                    unclean=record.config.unclean_leader_election_enable,
                    choose_nodes=self._choose_nodes,
                    leader_hung=(record.topic_id, p) in hung,
                    prefer=prefer,
                )
                for slot in plan.removed:
                    logger.warning("%s-%d: replica %s lost with its node", record.name, p, slot)
                    handle = self._actors.pop((record.topic_id, p, slot), None)
                    if handle is not None:
                        self._kill(handle, f"{record.name}-{p} replica {slot}")
                if plan.changed:
                    self.registry.save(record)
                    for slot in state.replicas:
                        self._actor(record, p, slot)
                    pushes.append((record, p))
                    if state.leader is not None and (state.leader, state.epoch) != leader_before:
                        self._metrics.elected(record.name)
                offline += state.leader is None
        self._metrics.offline_partitions(offline)
        return pushes

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

    async def replica_state(
        self, topic: str, partition: int, slot: str, restarted: bool = False, *, session: str = ""
    ) -> dict[str, Any] | None:
        """A (re)started replica asks what it is. None if it is no longer a replica.

        A *restarted* leader leads a new epoch: its high watermark is relearned from its
        followers and must not move back within the epoch consumers already read.
        """
        await self._internal(session, "replica_state")
        record = self.registry.topics.get(topic)
        if record is None or partition >= len(record.states):
            return None
        state = record.states[partition]
        if slot not in state.replicas:
            return None
        if restarted and slot == state.leader:
            async with self._mutex():
                state.epoch += 1
                self.registry.save(record)
            logger.warning(
                "%s-%d: leader %s restarted; epoch %d", topic, partition, slot, state.epoch
            )
            # The others learn the epoch in the background: this caller waits for the answer.
            asyncio.get_running_loop().create_task(self._push_roles(record, partition))
        alive = set(self._alive_nodes())
        replicas = {
            s: self._actor(record, partition, s)
            for s in state.replicas
            if state.nodes.get(s) in alive
        }
        role = "leader" if slot == state.leader else "follower"
        return {"role": role, "epoch": state.epoch, "replicas": replicas, "isr": state.isr}

    async def alter_isr(
        self, topic: str, partition: int, epoch: int, isr: list[str], *, session: str = ""
    ) -> list[str]:
        """The leader of ``epoch`` reports a new in-sync set; recorded if it is still leader.

        Raises:
            FencedLeaderEpoch: the caller is not the current leader.
            UnknownTopicOrPartition: no such partition.
        """
        await self._internal(session, "alter_isr")
        async with self._mutex():
            record = self.registry.topics.get(topic)
            if record is None or partition >= len(record.states):
                raise UnknownTopicOrPartition(f"{topic}-{partition} does not exist")
            state = record.states[partition]
            if state.alter_isr(epoch, isr):
                self.registry.save(record)
            return state.isr

    # --- API ------------------------------------------------------------------------------------

    async def ready(self) -> dict[str, Any]:
        """Start every known partition (after a restart) and describe the broker."""
        if self._refusal is not None:
            raise self._refusal
        await self._refresh_nodes()
        async with self._mutex():
            pushes = await self._heal(prefer=False)
            for record in list(self.registry.topics.values()):
                await self._start_partitions(record)
        await self._push_many(pushes)
        return {
            "data_dir": str(self.data_dir),
            "namespace": self.namespace,
            "topics": len(self.registry.topics),
            "security_enabled": self.security.enabled,
            "has_users": bool(self.security.users),
        }

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

    async def create_topic(
        self,
        name: str,
        partitions: int | None = None,
        replication_factor: int | None = None,
        config: dict[str, Any] | None = None,
        internal: bool = False,
        *,
        session: str = "",
    ) -> TopicDescription:
        """Kafka's rule: ``create`` on the topic or on the cluster. Internal topics are the
        broker's to create, but for the delay schedule, which a user's first delayed send
        creates."""
        if internal and name != DELAY_TOPIC:
            await self._internal(session, "create_topic(internal)")
        claims = await self._who(session) if internal else await self._may_create(session, name)
        default = self.config.num_partitions
        count = partitions if isinstance(partitions, int) and partitions > 0 else default
        self._guard.admit_mutation(claims, count)
        await self._refresh_nodes()
        async with self._mutex():
            validate_topic_name(name, internal)
            if name in self.registry.topics:
                raise TopicExists(f"topic {name!r} already exists")
            topic_id = uuid.uuid4().hex
            claim_topic_dir(self.data_dir, name, topic_id)  # refuses a foreign directory
            try:
                record = self.registry.create(
                    name,
                    self.config.num_partitions if partitions is None else partitions,
                    self.config.default_replication_factor
                    if replication_factor is None
                    else replication_factor,
                    config,
                    len(self._alive_nodes(self.config.replicas_on_head_node)),
                    topic_id,
                    internal,
                )
            except BrokerError:
                release_topic_dir(self.data_dir, name)
                raise
            await self._start_partitions(record)
        self._nudge_group_coordinator()
        return await self.describe_topic(name, session=self._token)

    async def _may_create(self, session: object, name: str) -> SessionClaims:
        """Kafka's rule: ``create`` on the cluster, or else on the topic; the caller's claims.

        Raises:
            AuthenticationFailed, Unauthorized."""
        claims = await self._who(session)
        if not self._guard.permits(claims, "create", "cluster", "cluster"):
            await self._access(session, "create", "topic", name)
        return claims

    async def delete_topic(self, name: str, *, session: str = "") -> None:
        claims = await self._access(session, "delete", "topic", name)
        validate_topic_name(name)  # the broker's internal topics are not the user's to delete
        async with self._mutex():
            record = self.registry.get(name)
            self._guard.admit_mutation(claims, record.partitions)
            handles = [
                self._actor(record, p, slot)
                for p, state in enumerate(record.states)
                for slot in state.replicas
            ]
            await asyncio.gather(
                *(h.delete.remote(token=self._token) for h in handles), return_exceptions=True
            )
            for handle in handles:
                ray.kill(handle, no_restart=True)
            for key in [k for k in self._actors if k[0] == record.topic_id]:
                del self._actors[key]
            self.registry.delete(name)
            release_topic_dir(self.data_dir, record.name)  # the broker's files only
        self._nudge_group_coordinator()

    async def list_topics(self, include_internal: bool = False, *, session: str = "") -> list[str]:
        """The topics the caller may describe."""
        claims = await self._who(session)
        return sorted(
            name
            for name in self.registry.topics
            if (include_internal or not name.startswith("__"))
            and self._guard.permits(claims, "describe", "topic", name)
        )

    async def topic_partitions(self, *, session: str = "") -> dict[str, int]:
        """Partition count of every topic (what group assignment works from)."""
        await self._internal(session, "topic_partitions")
        return {name: record.partitions for name, record in self.registry.topics.items()}

    async def create_partitions(
        self, name: str, total: int, *, session: str = ""
    ) -> TopicDescription:
        claims = await self._access(session, "alter", "topic", name)
        validate_topic_name(name)
        async with self._mutex():
            current = self.registry.get(name).partitions
            if isinstance(total, int) and total > current:
                self._guard.admit_mutation(claims, total - current)
            record = self.registry.add_partitions(name, total)
            await self._start_partitions(record)
        self._nudge_group_coordinator()
        return await self.describe_topic(name, session=self._token)

    async def alter_topic_config(
        self, name: str, updates: dict[str, Any], *, session: str = ""
    ) -> TopicDescription:
        await self._access(session, "alter_configs", "topic", name)
        validate_topic_name(name)
        async with self._mutex():
            record = self.registry.alter_config(name, updates)
            await self._start_partitions(record)
            handles = [
                self._actor(record, p, slot)
                for p, state in enumerate(record.states)
                for slot in state.replicas
            ]
            await asyncio.gather(
                *(
                    h.update_config.remote(record.config_overrides, token=self._token)
                    for h in handles
                ),
                return_exceptions=True,
            )
        return await self.describe_topic(name, session=self._token)

    async def describe_topic(self, name: str, *, session: str = "") -> TopicDescription:
        """Raises Unauthorized (whether or not the topic exists), UnknownTopicOrPartition."""
        await self._access(session, "describe", "topic", name)
        record = self.registry.get(name)
        async with self._mutex():
            await self._start_partitions(self._current(record))
        partitions = []
        for p, state in enumerate(record.states):
            info: dict[str, Any] = {}
            if state.leader is not None:
                try:
                    ref = submit(self._actor(record, p, state.leader).info, session=self._token)
                    info = await await_ref(ref, DESCRIBE_TIMEOUT_S)
                except BrokerError as exc:  # described without offsets (shown as -1)
                    logger.info("%s-%d: leader did not describe itself: %s", name, p, exc)
            offsets = info.get("offsets")
            partitions.append(
                PartitionInfo(
                    partition=p,
                    leader=state.leader or "",
                    leader_node_id=state.nodes.get(state.leader or "", ""),
                    leader_epoch=state.epoch,
                    replicas=list(state.replicas),
                    isr=list(state.isr),
                    log_start_offset=offsets.log_start_offset if offsets else -1,
                    high_watermark=offsets.high_watermark if offsets else -1,
                    log_end_offset=offsets.log_end_offset if offsets else -1,
                )
            )
        return TopicDescription(name, record.topic_id, record.config.to_kafka_dict(), partitions)

    async def metadata(
        self, name: str, auto_create: bool = False, *, session: str = ""
    ) -> TopicMetadata:
        """Handles of a topic's partition leaders (None while a partition has no leader);
        creates the topic if allowed and asked.

        Raises:
            Unauthorized: the caller may not describe the topic (whether or not it exists).
            UnknownTopicOrPartition.
        """
        if name == DELAY_TOPIC:  # every user's delayed sends go through it
            await self._who(session)
        else:
            await self._access(session, "describe", "topic", name)
        if (
            auto_create
            and self.config.auto_create_topics_enable
            and name not in self.registry.topics
        ):
            try:
                await self._may_create(session, name)
                await self.create_topic(name, session=self._token)
            except Exception:
                if name not in self.registry.topics:  # lost a race with another creator: fine
                    raise
        record = self.registry.get(name)
        async with self._mutex():
            await self._start_partitions(self._current(record))
        leaders = [
            None if state.leader is None else self._actor(record, p, state.leader)
            for p, state in enumerate(record.states)
        ]
        return TopicMetadata(record.name, record.topic_id, leaders, record.config.to_kafka_dict())

    async def reassign_partition(
        self,
        name: str,
        partition: int,
        nodes: list[str],
        timeout_s: float = 120.0,
        *,
        session: str = "",
    ) -> list[str]:
        """Move a partition's replicas onto ``nodes`` (the first becomes the preferred leader):
        new replicas are added and caught up from the leader while writes go on; once they are
        in sync the replicas not on ``nodes`` are removed (leadership moves first, with a new
        epoch, if the leader is among them). Returns the new replica slots.

        Raises:
            UnknownTopicOrPartition, InvalidReplicationFactor: bad target.
            BrokerTimeoutError: the new replicas did not catch up in ``timeout_s`` (they stay as
                extra followers; call again to finish).
        """
        await self._access(session, "alter", "cluster", "cluster")
        record = self.registry.get(name)
        if not 0 <= partition < record.partitions:
            raise UnknownTopicOrPartition(f"{name}-{partition} does not exist")
        await self._refresh_nodes()
        alive = set(self._alive_nodes())
        if len(set(nodes)) != len(nodes) or len(nodes) != record.replication_factor:
            raise InvalidReplicationFactor(
                f"give {record.replication_factor} distinct nodes for {name}-{partition}, "
                f"got {nodes}"
            )
        if missing := [n for n in nodes if n not in alive]:
            raise InvalidReplicationFactor(f"nodes {missing} are not live Ray nodes")
        async with self._mutex():
            state = record.states[partition]
            present = set(state.nodes.values())
            added = [state.add_slot(node) for node in nodes if node not in present]
            if added:
                self.registry.save(record)
                for slot in added:
                    self._actor(record, partition, slot)
                await self._push_roles(record, partition)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any(slot not in state.isr for slot in state.replicas if state.nodes[slot] in nodes):
            if asyncio.get_running_loop().time() > deadline:
                raise BrokerTimeoutError(
                    f"{name}-{partition}: new replicas did not catch up within {timeout_s} s"
                )
            await asyncio.sleep(0.1)
        async with self._mutex():
            leaving = [slot for slot in state.replicas if state.nodes[slot] not in nodes]
            for slot in leaving:
                handle = self._actors.pop((record.topic_id, partition, slot), None)
                was_leader = slot == state.leader
                state.remove_slot(slot)
                if was_leader:
                    state.elect({s for s in state.replicas if state.nodes[s] in alive}, False)
                if handle is not None:
                    try:
                        await await_ref(
                            submit(handle.delete, token=self._token), ROLE_CHANGE_TIMEOUT_S
                        )
                    except BrokerError as exc:  # its files stay; the actor is stopped anyway
                        logger.warning("%s-%d: removing replica %s: %s", name, partition, slot, exc)
                    self._kill(handle, f"{name}-{partition} replica {slot}")
            order = {node: index for index, node in enumerate(nodes)}
            state.replicas.sort(key=lambda slot: order[state.nodes[slot]])
            self.registry.save(record)
            await self._push_roles(record, partition)
            return list(state.replicas)

    async def shutdown(self, *, session: str = "") -> int:
        """Stop every partition actor (their data stays on disk); returns how many were stopped.

        The caller then kills this Controller; the next ``connect()`` starts a fresh one that
        recovers everything from the data directory.
        """
        await self._access(session, "alter", "cluster", "cluster")
        async with self._mutex():
            if self._monitor is not None:
                self._monitor.cancel()
            handles = list(self._actors.values())
            await asyncio.gather(
                *(h.close.remote(token=self._token) for h in handles), return_exceptions=True
            )
            for handle in handles:
                ray.kill(handle, no_restart=True)
            self._actors.clear()
            self.registry.close()
            self._dir_lock.release()  # the next broker on this directory may start at once
        return len(handles)

    async def broker_config(self, *, session: str = "") -> dict[str, Any]:
        """The whole broker config for callers allowed ``describe_configs`` on the cluster
        (Kafka's rule for broker configs); any other authenticated caller gets the settings
        clients need (``CLIENT_VISIBLE_CONFIG``: delay.max.ms, ...), never the data
        directory, listener addresses or superusers."""
        claims = await self._who(session)
        config = self.config.model_dump(by_alias=True)
        if self._guard.permits(claims, "describe_configs", "cluster", "cluster"):
            return config
        return {key: value for key, value in config.items() if key in CLIENT_VISIBLE_CONFIG}

    async def describe_cluster(self, *, session: str = "") -> list[dict[str, Any]]:
        """The live Ray nodes (id, address, CPUs, memory): the cluster's layout is for callers
        allowed ``describe`` on the cluster, as Kafka's DescribeCluster, not for every tenant.

        Raises:
            Unauthorized
        """
        await self._access(session, "describe", "cluster", "cluster")
        return [
            {
                "node_id": node["NodeID"],
                "address": node.get("NodeManagerAddress"),
                "cpus": node.get("Resources", {}).get("CPU", 0),
                "memory_bytes": node.get("Resources", {}).get("memory", 0),
            }
            for node in ray.nodes()
            if node.get("Alive")
        ]


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
