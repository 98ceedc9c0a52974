"""Topic and consumer-group administration, the way kafka-python's ``KafkaAdminClient`` does it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ray_broker._ray import call
from ray_broker.errors import BrokerNotRunning
from ray_broker.metadata import MetadataCache
from ray_broker.structs import GroupDescription, GroupListing, TopicDescription, TopicPartition

# Creating a topic starts its partition actors, which can take a while on a busy cluster; no
# admin call waits longer than this.
ADMIN_TIMEOUT_S = 120.0


class Admin:
    """Manage topics and consumer groups. Every method raises typed ``BrokerError``s."""

    def __init__(
        self, controller: Any, coordinator: Any, metadata: MetadataCache, namespace: str = ""
    ) -> None:
        self._namespace = namespace
        self._controller = controller
        self._coordinator = coordinator
        self._metadata = metadata

    def _call(self, method: str, *args: Any, timeout_s: float = ADMIN_TIMEOUT_S) -> Any:
        return call(
            getattr(self._controller, method),
            *args,
            timeout_s=timeout_s,
            unavailable=BrokerNotRunning,
        )

    def _group_call(self, method: str, *args: Any) -> Any:
        return call(
            getattr(self._coordinator, method),
            *args,
            timeout_s=ADMIN_TIMEOUT_S,
            unavailable=BrokerNotRunning,
        )

    def create_topic(
        self,
        name: str,
        partitions: int | None = None,
        replication_factor: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> TopicDescription:
        """Create a topic and start its partitions; returns its description.

        Raises:
            TopicExists, InvalidTopicName, InvalidPartitions, InvalidReplicationFactor,
            InvalidConfig.
        """
        return self._call("create_topic", name, partitions, replication_factor, config)

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data. Raises TopicNotFound."""
        self._call("delete_topic", name)
        self._metadata.forget(name)

    def hop_stamps(self, topic: str, partition: int, *, enable: bool) -> list[tuple[str, int, int]]:
        """Switch the latency stamps (``ray_broker.hops``) of a partition's leader process on or
        off; returns the stamps it took so far. A diagnostic: ``loadtest/latency.py
        --breakdown`` uses it to show where a record's time goes."""
        leader = self._metadata.topic(topic).leader(partition)
        return call(leader.hop_stamps, enable, timeout_s=ADMIN_TIMEOUT_S)

    def list_topics(self, include_internal: bool = False) -> list[str]:
        return self._call("list_topics", include_internal)

    def describe_topic(self, name: str) -> TopicDescription:
        """Partitions with leader, offsets and config. Raises TopicNotFound."""
        return self._call("describe_topic", name)

    def create_partitions(self, name: str, total: int) -> TopicDescription:
        """Grow a topic to ``total`` partitions. Raises InvalidPartitions, TopicNotFound."""
        description = self._call("create_partitions", name, total)
        self._metadata.forget(name)
        return description

    def alter_topic_config(self, name: str, updates: dict[str, Any]) -> TopicDescription:
        """Change topic settings (Kafka names). Raises InvalidConfig, TopicNotFound."""
        description = self._call("alter_topic_config", name, updates)
        self._metadata.forget(name)
        return description

    def reassign_partitions(
        self, moves: dict[TopicPartition, list[str]], timeout_s: float = 120.0
    ) -> dict[TopicPartition, list[str]]:
        """Move partitions' replicas onto the given Ray node ids (first = preferred leader),
        copying the data before switching over, without stopping writes. Returns each
        partition's new replica slots.

        Raises:
            TopicNotFound, UnknownTopicOrPartition, InvalidReplicationFactor, BrokerTimeoutError.
        """
        done = {}
        for tp, nodes in moves.items():
            tp = TopicPartition(*tp)
            done[tp] = self._call(
                "reassign_partition",
                tp.topic,
                tp.partition,
                nodes,
                timeout_s,
                timeout_s=timeout_s + 30,
            )
            self._metadata.forget(tp.topic)
        return done

    # --- consumer groups --------------------------------------------------------------------------

    def list_groups(self) -> list[GroupListing]:
        """Groups with members or committed offsets, with their state and member count."""
        return self._group_call("list_groups")

    def describe_group(self, group_id: str) -> GroupDescription:
        """State, members and their assignment, and per partition the committed offset, log
        end and lag. Raises GroupNotFound."""
        return self._group_call("describe_group", group_id)

    def delete_group(self, group_id: str) -> None:
        """Forget an empty group's committed offsets. Raises GroupNotFound, GroupNotEmpty."""
        self._group_call("delete_group", group_id)

    def reset_offsets(
        self,
        group_id: str,
        topic: str,
        to: str,
        value: int | datetime | None = None,
    ) -> dict[TopicPartition, int]:
        """Move an empty group's committed offsets on ``topic`` to "earliest", "latest",
        "datetime" (``value``: a datetime or ms timestamp) or "offset" (``value``: the offset).

        Raises:
            GroupNotEmpty: the group has active members.
            TopicNotFound, OffsetOutOfRange, InvalidConfig.
        """
        if isinstance(value, datetime):
            value = int(value.timestamp() * 1000)
        moved = self._group_call("reset_offsets", group_id, topic, to, value)
        return {TopicPartition(t, p): offset for (t, p), offset in moved.items()}

    def list_transactions(self) -> list[dict[str, Any]]:
        """Every transactional id with its producer id, epoch, state and partitions (Kafka's
        ``kafka-transactions.sh list``); empty if no transactional producer ever ran."""
        import ray

        from ray_broker.config import TRANSACTION_COORDINATOR_NAME

        try:
            coordinator = ray.get_actor(TRANSACTION_COORDINATOR_NAME, namespace=self._namespace)
        except ValueError:
            return []
        return call(coordinator.describe, timeout_s=ADMIN_TIMEOUT_S, unavailable=BrokerNotRunning)
