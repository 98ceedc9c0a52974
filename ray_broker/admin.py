"""Topic and consumer-group administration, the way kafka-python's ``KafkaAdminClient`` does it."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from ray_broker._ray import call, resolve, retrying, submit
from ray_broker.access_admin import AccessAdmin
from ray_broker.actors.security.access_guard import with_session
from ray_broker.errors import BrokerError, BrokerNotRunning, GroupNotEmpty, TopicNotFound
from ray_broker.metadata import MetadataCache
from ray_broker.structs import (
    DeadLetter,
    GroupDescription,
    GroupListing,
    ShareGroupDescription,
    SharePartitionState,
    TopicDescription,
    TopicPartition,
    TraceEvent,
)

# Creating a topic starts its partition actors, which can take a while on a busy cluster; no
# admin call waits longer than this.
ADMIN_TIMEOUT_S = 120.0
RETRY_BACKOFF_S = 0.1
T = TypeVar("T")


class Admin(AccessAdmin):
    """Manage topics, consumer groups, users, ACLs and quotas. Every method raises typed
    ``BrokerError``s."""

    def __init__(
        self,
        controller: Any,
        coordinator: Any,
        metadata: MetadataCache,
        namespace: str = "",
        broker: Any = None,
    ) -> None:
        self._broker = broker  # for the operations that read and write records
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

    def _running(self, name: str) -> Any:
        """The namespace's actor ``name``, or None if it was never started (the transaction
        coordinator and the delay scheduler start on first use)."""
        import ray

        try:
            handle = ray.get_actor(name, namespace=self._namespace)
        except ValueError:
            return None
        return with_session(handle, getattr(self._broker, "_session", None))

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

    def describe_cluster(self) -> list[dict[str, Any]]:
        """The broker's live Ray nodes: id, address, CPUs, memory.

        Raises:
            Unauthorized: without ``describe`` on the cluster (tenant users never have it).
        """
        return self._call("describe_cluster")

    def describe_topic(self, name: str) -> TopicDescription:
        """Partitions with leader, offsets and config. Raises TopicNotFound."""
        return self._call("describe_topic", name)

    def describe_topics(self, names: list[str]) -> dict[str, TopicDescription | BrokerError]:
        """Many topics at once (Kafka's ``describe_topics``): the Controller describes them
        concurrently, so a console of a thousand topics waits for the slowest, not the sum. A
        topic that cannot be described maps to its typed error instead of failing the rest."""
        return self._many(self._controller.describe_topic, names)

    def _many(self, method: Any, keys: list[str]) -> dict[str, Any]:
        refs = {key: submit(method, key, unavailable=BrokerNotRunning) for key in keys}
        out: dict[str, Any] = {}
        for key, ref in refs.items():
            try:
                out[key] = resolve(ref, ADMIN_TIMEOUT_S, BrokerNotRunning)
            except BrokerError as exc:
                out[key] = exc
        return out

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

    def describe_groups(self, group_ids: list[str]) -> dict[str, GroupDescription | BrokerError]:
        """Many groups at once (Kafka's ``describe_consumer_groups``), concurrently; a group that
        cannot be described maps to its typed error."""
        return self._many(self._coordinator.describe_group, group_ids)

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
        from ray_broker.config import TRANSACTION_COORDINATOR_NAME

        coordinator = self._running(TRANSACTION_COORDINATOR_NAME)
        if coordinator is None:
            return []
        return call(coordinator.describe, timeout_s=ADMIN_TIMEOUT_S, unavailable=BrokerNotRunning)

    # --- share groups and dead letters ----------------------------------------------------------

    def list_share_groups(self) -> list[str]:
        """Share groups that have read from any partition."""
        return self._group_call("list_share_groups")

    def _share_leaders(self, group_id: str) -> list[tuple[TopicPartition, Any]]:
        out = []
        for topic, partition in self._group_call("share_group_partitions", group_id):
            try:
                meta = self._metadata.topic(topic)
            except TopicNotFound:
                continue  # the topic was deleted since
            if partition < meta.num_partitions:
                out.append((TopicPartition(topic, partition), meta.leader(partition)))
        return out

    def describe_share_group(self, group_id: str) -> ShareGroupDescription:
        """Members, and per partition the records in flight, available, dead-lettered, and
        the lag. Raises GroupNotFound."""

        def attempt() -> list[dict[str, Any]]:
            leaders = self._share_leaders(group_id)
            refs = [submit(leader.share_describe, group_id) for _, leader in leaders]
            return resolve(refs, ADMIN_TIMEOUT_S)

        found = self._retrying(attempt)
        states = [
            SharePartitionState(**{k: v for k, v in d.items() if k != "dead_letter_topic"})
            for d in found
        ]
        members = sorted({m for d in found for m in d["members"]})
        topics = sorted({d["dead_letter_topic"] for d in found if d["dead_letter_topic"]})
        return ShareGroupDescription(group_id, members, states, topics)

    def reset_share_group(
        self, group_id: str, topic: str, to: str, value: int | None = None
    ) -> dict[TopicPartition, int]:
        """Start a share group over on ``topic`` at "earliest", "latest" or "offset"
        (``value``). Raises GroupNotEmpty while any record is locked, TopicNotFound."""

        def attempt() -> dict[TopicPartition, int]:
            meta = self._metadata.topic(topic)
            refs = {
                TopicPartition(topic, p): submit(meta.leader(p).share_reset, group_id, to, value)
                for p in range(meta.num_partitions)
            }
            return {tp: resolve(ref, ADMIN_TIMEOUT_S) for tp, ref in refs.items()}

        return self._retrying(attempt)

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """Run a call to partition leaders again after a retriable failure (a leader moved or
        restarts), with fresh metadata, for up to ``ADMIN_TIMEOUT_S``."""
        return retrying(
            attempt,
            time.monotonic() + ADMIN_TIMEOUT_S,
            RETRY_BACKOFF_S,
            lambda _error: self._metadata.forget_all(),
        )

    def delete_share_group(self, group_id: str) -> None:
        """Forget a share group's state; its members must be stopped. Raises GroupNotFound,
        GroupNotEmpty."""
        for description in self.describe_share_group(group_id).partitions:
            if description.in_flight:
                raise GroupNotEmpty(
                    f"share group {group_id!r} has records in flight on "
                    f"{description.topic}-{description.partition}; stop its members first",
                    group_id=group_id,
                )
        self._group_call("delete_share_group", group_id)

    def list_dead_letters(self, topic: str, max_records: int | None = 100) -> list[DeadLetter]:
        """Records of a dead-letter topic with their origin and reason. Raises TopicNotFound."""
        from ray_broker.dead_letters import list_dead_letters

        return list_dead_letters(self._require_broker(), topic, max_records)

    def redrive_dead_letters(self, topic: str, max_records: int | None = None) -> int:
        """Send a dead-letter topic's records back to their original topics, exactly once
        (a transaction commits the re-drive's position with them); returns how many."""
        from ray_broker.dead_letters import redrive

        return redrive(self._require_broker(), topic, max_records)

    def trace(self, topic: str, partition: int, offset: int) -> list[TraceEvent]:
        """The trail of a traced record, oldest step first; empty when the record was not
        traced (its topic has ``message.trace=false`` and it was not sent with
        ``trace=True``) or does not exist. Steps are shipped every ~100 ms.

        Raises:
            InvalidConfig: a negative partition or offset.
        """
        from ray_broker.trace_reader import trail

        return trail(self._require_broker(), topic, partition, offset)

    def trace_by_id(self, trace_id: str) -> list[TraceEvent]:
        """The trails of records sent with the header ``trace.id`` = ``trace_id``."""
        from ray_broker.trace_reader import trail_by_id

        return trail_by_id(self._require_broker(), trace_id)

    def _require_broker(self) -> Any:
        if self._broker is None:
            raise BrokerNotRunning("this Admin was made without a broker connection")
        return self._broker

    def describe_delayed(self) -> dict[str, Any]:
        """The delay scheduler's state: pending records, next due time, how many fired,
        lateness percentiles (ms) and memory; ``{"running": False}`` before any delayed send."""
        from ray_broker.config import DELAY_SCHEDULER_NAME

        scheduler = self._running(DELAY_SCHEDULER_NAME)
        if scheduler is None:
            return {"running": False}
        found = call(scheduler.describe, timeout_s=ADMIN_TIMEOUT_S, unavailable=BrokerNotRunning)
        return {"running": True, **found}
