"""The Controller: one named, detached actor per broker namespace that owns topic metadata.

It validates and persists metadata through the ``TopicRegistry`` and starts one
``PartitionActor`` per partition. Clients ask it for metadata (actor handles) and then talk to
partitions directly. Created with ``max_restarts=-1``: a restarted Controller reloads its
metadata log and re-attaches to the partition actors by name, starting any that are missing
(after a whole-cluster restart), which rebuild themselves from their files.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ray_broker.actors.metadata_store import MetadataStore
from ray_broker.actors.partition import PartitionActor
from ray_broker.actors.topic_registry import TopicRecord, TopicRegistry
from ray_broker.config import GROUP_COORDINATOR_NAME, METADATA_TOPIC, BrokerConfig, parse_config
from ray_broker.structs import PartitionInfo, TopicDescription, TopicMetadata


def live_nodes() -> list[str]:
    return sorted(node["NodeID"] for node in ray.nodes() if node.get("Alive"))


def live_node_count() -> int:
    return len(live_nodes())


class Controller:
    """Topic metadata and partition placement for one broker namespace."""

    def __init__(self, broker_config: dict[str, Any], namespace: str) -> None:
        self.config: BrokerConfig = parse_config(BrokerConfig, broker_config)
        self.namespace = namespace
        self.data_dir = Path(self.config.data_dir)
        self.registry = TopicRegistry(MetadataStore(self.data_dir / METADATA_TOPIC / "partition=0"))
        self._partitions: dict[tuple[str, int], Any] = {}  # (topic id, partition) -> handle
        self._starting: set[tuple[str, int]] = set()  # created, not yet known to be ready
        self._lock: asyncio.Lock | None = None

    def _mutex(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    # --- partition actors ---------------------------------------------------------------------

    def _partition_directory(self, record: TopicRecord, partition: int) -> Path:
        return self.data_dir / record.name / f"partition={partition}"

    def _attach_or_start(self, record: TopicRecord, partition: int) -> Any:
        """The partition's actor handle: cached, found by name, or newly started."""
        key = (record.topic_id, partition)
        handle = self._partitions.get(key)
        if handle is not None:
            return handle
        name = record.actor_name(partition)
        try:
            handle = ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            self._starting.add(key)
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
                    scheduling_strategy=NodeAffinitySchedulingStrategy(
                        record.placement[partition], soft=False
                    ),
                )
                .remote(
                    record.name,
                    partition,
                    str(self._partition_directory(record, partition)),
                    record.config_overrides,
                    self.config.log_retention_check_interval_ms,
                    self.config.fetch_max_wait_cap_ms,
                )
            )
        self._partitions[key] = handle
        return handle

    def _place(self, record: TopicRecord) -> TopicRecord:
        """Give every partition a live node, keeping existing placements on live nodes.

        A partition's files are on its node's disk, so its actor is pinned there (hard node
        affinity): a crashed actor restarts beside its data. Partitions whose node is gone (a
        whole-cluster restart on the same disk) move to the least-loaded live node.
        """
        nodes = live_nodes()
        load = {node: 0 for node in nodes}
        for other in self.registry.topics.values():
            for node in other.placement:
                if node in load:
                    load[node] += 1
        placement = list(record.placement[: record.partitions])
        for index in range(record.partitions):
            if index < len(placement) and placement[index] in load:
                continue
            node = min(nodes, key=lambda n: (load[n], n))
            load[node] += 1
            if index < len(placement):
                placement[index] = node
            else:
                placement.append(node)
        return self.registry.set_placement(record.name, placement)

    async def _start_partitions(self, record: TopicRecord) -> list[Any]:
        """Handles of all the topic's partitions, waiting until newly started ones are ready.

        Running ones are not waited for: a restarting partition must not stall metadata, the
        clients retry against it themselves.
        """
        if any((record.topic_id, p) not in self._partitions for p in range(record.partitions)):
            record = self._place(record)
        handles = [self._attach_or_start(record, p) for p in range(record.partitions)]
        fresh = [(record.topic_id, p) for p in range(record.partitions)]
        fresh = [key for key in fresh if key in self._starting]
        await asyncio.gather(*(self._partitions[key].ready.remote() for key in fresh))
        self._starting.difference_update(fresh)
        return handles

    # --- API ------------------------------------------------------------------------------------

    async def ready(self) -> dict[str, Any]:
        """Start every known partition (after a restart) and describe the broker."""
        async with self._mutex():
            for record in list(self.registry.topics.values()):
                await self._start_partitions(record)
        return {
            "data_dir": str(self.data_dir),
            "namespace": self.namespace,
            "topics": len(self.registry.topics),
        }

    async def create_topic(
        self,
        name: str,
        partitions: int | None = None,
        replication_factor: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> TopicDescription:
        async with self._mutex():
            record = self.registry.create(
                name,
                self.config.num_partitions if partitions is None else partitions,
                self.config.default_replication_factor
                if replication_factor is None
                else replication_factor,
                config,
                live_node_count(),
            )
            await self._start_partitions(record)
        self._nudge_group_coordinator()
        return await self.describe_topic(name)

    async def delete_topic(self, name: str) -> None:
        async with self._mutex():
            record = self.registry.get(name)
            handles = [self._attach_or_start(record, p) for p in range(record.partitions)]
            await asyncio.gather(*(h.delete.remote() for h in handles))
            for partition, handle in enumerate(handles):
                ray.kill(handle, no_restart=True)
                self._partitions.pop((record.topic_id, partition), None)
            self.registry.delete(name)
            shutil.rmtree(self.data_dir / record.name, ignore_errors=True)
        self._nudge_group_coordinator()

    async def topic_partitions(self) -> dict[str, int]:
        """Partition count of every topic (what group assignment works from)."""
        return {name: record.partitions for name, record in self.registry.topics.items()}

    def _nudge_group_coordinator(self) -> None:
        """Tell the group coordinator topics changed, so groups rebalance now (best effort: it
        also polls)."""
        try:
            coordinator = ray.get_actor(GROUP_COORDINATOR_NAME, namespace=self.namespace)
        except ValueError:
            return
        coordinator.topics_changed.remote()

    async def list_topics(self, include_internal: bool = False) -> list[str]:
        return sorted(
            name for name in self.registry.topics if include_internal or not name.startswith("__")
        )

    async def create_partitions(self, name: str, total: int) -> TopicDescription:
        async with self._mutex():
            record = self.registry.add_partitions(name, total)
            await self._start_partitions(record)
        self._nudge_group_coordinator()
        return await self.describe_topic(name)

    async def alter_topic_config(self, name: str, updates: dict[str, Any]) -> TopicDescription:
        async with self._mutex():
            record = self.registry.alter_config(name, updates)
            handles = await self._start_partitions(record)
            await asyncio.gather(
                *(h.update_config.remote(record.config_overrides) for h in handles)
            )
        return await self.describe_topic(name)

    async def describe_topic(self, name: str) -> TopicDescription:
        record = self.registry.get(name)
        handles = await self._start_partitions(record)
        infos = await asyncio.gather(*(h.info.remote() for h in handles))
        partitions = [
            PartitionInfo(
                partition=p,
                leader=record.actor_name(p),
                leader_node_id=info["node_id"],
                leader_epoch=0,
                replicas=[record.actor_name(p)],
                isr=[record.actor_name(p)],
                log_start_offset=info["offsets"].log_start_offset,
                high_watermark=info["offsets"].high_watermark,
                log_end_offset=info["offsets"].log_end_offset,
            )
            for p, info in enumerate(infos)
        ]
        return TopicDescription(name, record.topic_id, record.config.to_kafka_dict(), partitions)

    async def metadata(self, name: str, auto_create: bool = False) -> TopicMetadata:
        """Handles of a topic's partition leaders; creates the topic if allowed and asked."""
        if (
            auto_create
            and self.config.auto_create_topics_enable
            and name not in self.registry.topics
        ):
            try:
                await self.create_topic(name)
            except Exception:
                if name not in self.registry.topics:  # lost a race with another creator: fine
                    raise
        record = self.registry.get(name)
        async with self._mutex():
            handles = await self._start_partitions(record)
        return TopicMetadata(record.name, record.topic_id, handles, record.config.to_kafka_dict())

    async def shutdown(self) -> int:
        """Stop every partition actor (their data stays on disk); returns how many were stopped.

        The caller then kills this Controller; the next ``connect()`` starts a fresh one that
        recovers everything from the data directory.
        """
        async with self._mutex():
            for record in self.registry.topics.values():
                for partition in range(record.partitions):
                    self._attach_or_start(record, partition)
            handles = list(self._partitions.values())
            await asyncio.gather(*(h.close.remote() for h in handles), return_exceptions=True)
            for handle in handles:
                ray.kill(handle, no_restart=True)
            self._partitions.clear()
            self.registry.close()
        return len(handles)

    async def broker_config(self) -> dict[str, Any]:
        return self.config.model_dump(by_alias=True)
