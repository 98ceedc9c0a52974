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
from typing import Any

import ray

from ray_broker._ray import await_ref, submit
from ray_broker.actors.controller.cluster_watch import ClusterWatch
from ray_broker.actors.controller.shell import ROLE_CHANGE_TIMEOUT_S
from ray_broker.actors.controller.topic_calls import TopicCalls
from ray_broker.actors.controller.topic_registry import TopicRecord
from ray_broker.actors.security.admin import SecurityAdmin
from ray_broker.config import CLIENT_VISIBLE_CONFIG
from ray_broker.errors import (
    BrokerError,
    BrokerTimeoutError,
    InvalidReplicationFactor,
    UnknownTopicOrPartition,
)

logger = logging.getLogger(__name__)


class Controller(TopicCalls, ClusterWatch, SecurityAdmin):
    """Topic metadata, replica placement and leader election for one broker namespace; the
    owner of the security rules (``actors/security/admin.py``)."""

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
        await self._add_replicas(record, partition, nodes)
        await self._await_in_sync(record, partition, nodes, timeout_s)
        return await self._remove_replicas_off(record, partition, nodes, alive)

    async def _add_replicas(self, record: TopicRecord, partition: int, nodes: list[str]) -> None:
        """Start a follower on every target node the partition has no replica on yet."""
        async with self._mutex():
            state = record.states[partition]
            present = set(state.nodes.values())
            added = [state.add_slot(node) for node in nodes if node not in present]
            if added:
                self.registry.save(record)
                for slot in added:
                    self._actor(record, partition, slot)
                await self._push_roles(record, partition)

    async def _await_in_sync(
        self, record: TopicRecord, partition: int, nodes: list[str], timeout_s: float
    ) -> None:
        """Until every replica on a target node is in sync (the leader reports it)."""
        state = record.states[partition]
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any(slot not in state.isr for slot in state.replicas if state.nodes[slot] in nodes):
            if asyncio.get_running_loop().time() > deadline:
                raise BrokerTimeoutError(
                    f"{record.name}-{partition}: new replicas did not catch up within {timeout_s} s"
                )
            await asyncio.sleep(0.1)

    async def _remove_replicas_off(
        self, record: TopicRecord, partition: int, nodes: list[str], alive: set[str]
    ) -> list[str]:
        """Remove the replicas not on ``nodes`` (leadership moves first, with a new epoch)
        and order the rest as ``nodes`` lists them; returns the replica slots."""
        name = record.name
        async with self._mutex():
            state = record.states[partition]
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
