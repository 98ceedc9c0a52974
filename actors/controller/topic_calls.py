"""The Controller's topic calls: create, delete, list, describe, grow and reconfigure topics,
and the metadata clients route by (the leaders' handles)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import ray

from ray_broker._ray import await_ref, submit
from ray_broker.actors.controller.shell import DESCRIBE_TIMEOUT_S, ControllerShell
from ray_broker.actors.data_dir import (
    claim_topic_dir,
    release_topic_dir,
)
from ray_broker.actors.security.session_tokens import SessionClaims
from ray_broker.config import (
    DELAY_TOPIC,
    validate_topic_name,
)
from ray_broker.errors import (
    BrokerError,
    TopicExists,
)
from ray_broker.structs import PartitionInfo, TopicDescription, TopicMetadata

logger = logging.getLogger(__name__)


class TopicCalls(ControllerShell):
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
