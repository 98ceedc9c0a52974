"""Topic metadata and its rules, kept durable by the ``MetadataStore`` (no Ray here).

The Controller actor asks this registry what may be done and records what was done; it never
edits the topic table itself, so every change is validated and persisted in one place.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from ray_broker.actors.controller.partition_state import PartitionState
from ray_broker.actors.metadata_store import MetadataStore
from ray_broker.config import MAX_PARTITIONS, TopicConfig, parse_config, validate_topic_name
from ray_broker.errors import (
    InvalidConfig,
    InvalidPartitions,
    InvalidReplicationFactor,
    TopicExists,
    TopicNotFound,
)

_TOPIC_KEY = "topic:"


@dataclass
class TopicRecord:
    name: str
    topic_id: str
    partitions: int
    replication_factor: int
    config_overrides: dict[str, Any] = field(default_factory=dict)
    # Replicas, leader, epoch and ISR of each partition (filled in by the Controller).
    states: list[PartitionState] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.states = [
            s if isinstance(s, PartitionState) else PartitionState.from_dict(s) for s in self.states
        ]

    @property
    def config(self) -> TopicConfig:
        return parse_config(TopicConfig, self.config_overrides)

    def actor_name(self, partition: int, slot: str) -> str:
        # The topic id, not the name: a deleted and re-created topic never meets old actors.
        return f"ray_broker.partition.{self.topic_id}.{partition}.{slot}"


class TopicRegistry:
    """Validated, persisted create/delete/alter of topics."""

    def __init__(self, store: MetadataStore) -> None:
        self._store = store
        self.topics: dict[str, TopicRecord] = {}
        for key, document in store.load().items():
            if key.startswith(_TOPIC_KEY):
                record = TopicRecord(**document)
                self.topics[record.name] = record

    def get(self, name: str) -> TopicRecord:
        """Raises TopicNotFound if there is no such topic."""
        validate_topic_name(name, internal=isinstance(name, str) and name.startswith("__"))
        try:
            return self.topics[name]
        except KeyError:
            raise TopicNotFound(
                f"topic {name!r} does not exist; create it with admin.create_topic() or "
                "`ray-broker topic create`",
                topic=name,
            ) from None

    def create(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        config: dict[str, Any] | None,
        live_nodes: int,
        topic_id: str | None = None,
        internal: bool = False,
    ) -> TopicRecord:
        """Validate and persist a new topic (``internal``: one of the broker's "__" topics).

        Raises:
            InvalidTopicName, TopicExists, InvalidPartitions, InvalidReplicationFactor,
            InvalidConfig.
        """
        validate_topic_name(name, internal)
        if name in self.topics:
            raise TopicExists(f"topic {name!r} already exists")
        _check_partition_count(partitions)
        if not isinstance(replication_factor, int) or replication_factor < 1:
            raise InvalidReplicationFactor(
                f"replication_factor must be an int >= 1, got {replication_factor!r}"
            )
        if replication_factor > live_nodes:
            raise InvalidReplicationFactor(
                f"replication_factor {replication_factor} exceeds the {live_nodes} live Ray "
                "node(s); replicas must live on distinct nodes"
            )
        parsed = parse_config(TopicConfig, config)
        _check_replicated_compaction(parsed, replication_factor)
        _check_dead_letter_topic(name, parsed)
        overrides = parsed.model_dump(by_alias=True, exclude_unset=True)
        record = TopicRecord(
            name, topic_id or uuid.uuid4().hex, partitions, replication_factor, overrides
        )
        self._save(record)
        return record

    def delete(self, name: str) -> TopicRecord:
        record = self.get(name)
        self._store.put(_TOPIC_KEY + name, None)
        del self.topics[name]
        return record

    def add_partitions(self, name: str, total: int) -> TopicRecord:
        """Raises InvalidPartitions unless ``total`` exceeds the current count (Kafka's rule)."""
        record = self.get(name)
        _check_partition_count(total)
        if total <= record.partitions:
            raise InvalidPartitions(
                f"topic {name!r} has {record.partitions} partitions; the new total {total} must "
                "be larger (partitions cannot be removed)"
            )
        record.partitions = total
        self._save(record)
        return record

    def alter_config(self, name: str, updates: dict[str, Any]) -> TopicRecord:
        """Raises InvalidConfig if the merged config is invalid; nothing changes then."""
        record = self.get(name)
        normalized = parse_config(TopicConfig, updates).model_dump(
            by_alias=True, exclude_unset=True
        )
        merged = {**record.config_overrides, **normalized}
        _check_replicated_compaction(parse_config(TopicConfig, merged), record.replication_factor)
        _check_dead_letter_topic(name, parse_config(TopicConfig, merged))
        record.config_overrides = merged
        self._save(record)
        return record

    def save(self, record: TopicRecord) -> None:
        """Persist a record whose partition states the Controller changed."""
        self._save(record)

    def close(self) -> None:
        self._store.close()

    def _save(self, record: TopicRecord) -> None:
        self._store.put(_TOPIC_KEY + record.name, asdict(record))
        self.topics[record.name] = record


def _check_replicated_compaction(config: TopicConfig, replication_factor: int) -> None:
    """Compaction leaves offset gaps in sealed segments, which followers cannot copy yet (they
    append dense batches only), so the combination is refused rather than left to stall."""
    if config.compacts and replication_factor > 1:
        raise InvalidConfig(
            "cleanup.policy=compact is not supported with replication_factor > 1 yet; use "
            "replication_factor=1 or cleanup.policy=delete"
        )


def _check_dead_letter_topic(name: str, config: TopicConfig) -> None:
    """A dead-letter topic that is the topic itself would deliver rejected records again."""
    template = config.share_dlq_topic
    if template and template.replace("{group}", "") in (name, "{topic}"):
        raise InvalidConfig(
            f"share.dlq.topic={template!r} names the topic {name!r} itself; dead letters must go "
            "to another topic (the default is '{topic}.{group}.dlq')"
        )


def _check_partition_count(partitions: object) -> None:
    if not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1:
        raise InvalidPartitions(f"partitions must be an int >= 1, got {partitions!r}")
    if partitions > MAX_PARTITIONS:
        raise InvalidPartitions(f"partitions must be <= {MAX_PARTITIONS}, got {partitions}")
