"""Topic administration, the way kafka-python's ``KafkaAdminClient`` does it."""

from __future__ import annotations

from typing import Any

from ray_broker._remote import resolve
from ray_broker.errors import BrokerNotRunning
from ray_broker.metadata import MetadataCache
from ray_broker.structs import TopicDescription


class Admin:
    """Create, describe, alter and delete topics. Every method raises typed ``BrokerError``s."""

    def __init__(self, controller: Any, metadata: MetadataCache) -> None:
        self._controller = controller
        self._metadata = metadata

    def _call(self, method: str, *args: Any) -> Any:
        return resolve(
            getattr(self._controller, method).remote(*args), unavailable=BrokerNotRunning
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
