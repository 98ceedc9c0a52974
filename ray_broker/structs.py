"""Value types shared by the client API and the actors (a leaf module, like ``errors``).

Frozen and slotted: they cross actor boundaries by pickle and are created per record on the
``poll()`` path, so they stay small.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class AcknowledgeType(str, Enum):
    """A share-group member's answer for one delivered record (KIP-932)."""

    ACCEPT = "accept"  # processed: never delivered again
    RELEASE = "release"  # give it back: delivered again (to anyone), its count goes on
    REJECT = "reject"  # unprocessable: never delivered again; goes to the dead-letter topic


class ShareRecord(NamedTuple):
    """One record delivered to a share-group member: ``Record``'s fields and how many times it
    has been delivered (1 the first time). Acknowledge it with ``ShareConsumer.acknowledge``."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: Any
    headers: list[tuple[str, bytes | None]]
    delivery_count: int


@dataclass(frozen=True, slots=True)
class RecordMetadata:
    """Where an acknowledged record landed. ``offset`` is -1 under ``acks=0``."""

    topic: str
    partition: int
    offset: int
    timestamp: int


class Record(NamedTuple):
    """One consumed record. ``value`` None is a tombstone.

    A NamedTuple, not a dataclass: ``poll()`` makes one per record, and a tuple is built in C
    (see ``consumer/records.py``); it is immutable and reads by name all the same.
    """

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: Any
    headers: list[tuple[str, bytes | None]]


@dataclass(frozen=True, slots=True)
class ProduceResult:
    """A partition's answer to one produce batch."""

    base_offset: int
    last_offset: int
    log_append_time: int
    log_start_offset: int
    duplicate: bool = False
    # How long the broker held this answer back for the caller's quota (Kafka's field).
    throttle_time_ms: int = 0


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    log_start_offset: int
    high_watermark: int
    log_end_offset: int
    # The first offset a read_committed consumer may not read yet (an open transaction's first
    # record, or the high watermark).
    last_stable_offset: int = -1


@dataclass(frozen=True)
class PartitionInfo:
    partition: int
    leader: str
    leader_node_id: str
    leader_epoch: int
    replicas: list[str]
    isr: list[str]
    log_start_offset: int
    high_watermark: int
    log_end_offset: int

    @property
    def offline(self) -> bool:
        """No leader: nothing can be read or written until one is elected."""
        return not self.leader

    @property
    def under_replicated(self) -> bool:
        """Led, but with fewer in-sync replicas than replicas (Kafka's
        UnderReplicatedPartitions). An offline partition is offline, not under-replicated:
        the two counts never hold the same partition."""
        return bool(self.leader) and len(self.isr) < len(self.replicas)


@dataclass(frozen=True)
class TopicDescription:
    name: str
    topic_id: str
    config: dict[str, Any]
    partitions: list[PartitionInfo]


@dataclass(frozen=True, slots=True)
class FetchResponse:
    """A partition's answer to one fetch: records as an Arrow IPC stream, and its offsets.

    IPC rather than a Table: pickling a zero-copy slice of a large in-memory batch would ship the
    whole batch; the IPC writer ships only the slice, and the reader maps it without a copy.
    """

    records_ipc: Any  # pyarrow.Buffer
    num_records: int
    high_watermark: int
    log_start_offset: int
    # Where the next fetch starts: past the last record examined, including hidden control
    # records and aborted transactions' records (so positions and lag move past them).
    next_offset: int = -1
    last_stable_offset: int = -1
    throttle_time_ms: int = 0


@dataclass(frozen=True)
class TopicMetadata:
    """What a client needs to reach a topic's partitions: one leader actor handle each."""

    name: str
    topic_id: str
    leaders: list[Any]  # ray.actor.ActorHandle of each partition's leader, by partition number
    config: dict[str, Any]

    @property
    def num_partitions(self) -> int:
        return len(self.leaders)

    def leader(self, partition: int) -> Any:
        """The partition's leader handle.

        Raises:
            PartitionUnavailable: the partition has no leader right now (failover under way, or
                no in-sync replica is alive).
        """
        handle = self.leaders[partition]
        if handle is None:
            from ray_broker.errors import PartitionUnavailable

            raise PartitionUnavailable(
                f"{self.name}-{partition} has no leader right now; retrying after failover"
            )
        return handle


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    """Where one partition's share of a ``send_batch`` landed: offsets base..last inclusive."""

    topic: str
    partition: int
    base_offset: int
    last_offset: int


class OffsetAndTimestamp(NamedTuple):
    offset: int
    timestamp: int


@dataclass(frozen=True)
class MemberDescription:
    member_id: str
    group_instance_id: str | None
    client_id: str
    assignment: list[TopicPartition]


@dataclass(frozen=True)
class PartitionLag:
    """A group's progress on one partition: ``lag`` is None without a committed offset."""

    topic: str
    partition: int
    committed_offset: int | None
    log_end_offset: int
    lag: int | None
    member_id: str | None


@dataclass(frozen=True)
class GroupDescription:
    group_id: str
    state: str
    generation: int
    strategy: str | None
    members: list[MemberDescription]
    partitions: list[PartitionLag]


@dataclass(frozen=True)
class GroupListing:
    group_id: str
    state: str
    members: int


@dataclass(frozen=True)
class SharePartitionState:
    """A share group's progress on one partition (``Admin.describe_share_group``)."""

    topic: str
    partition: int
    start_offset: int  # every record below is accepted or archived
    end_offset: int  # the first record never delivered
    high_watermark: int
    in_flight: int  # delivered, locked, not answered yet
    available: int  # in the window, waiting for a member (released or not yet delivered)
    dead_lettering: int  # archived, the dead-letter copy not written yet
    dead_lettered: int  # copied to the dead-letter topic (since the leader loaded the state)
    lag: int  # records at or past start_offset not finished
    members: list[str]


@dataclass(frozen=True)
class TraceEvent:
    """One step in a traced record's life (``Admin.trace``): ``event`` is produced, appended,
    committed, delivered, accepted, released, rejected or dead_lettered; ``details`` say where
    and to whom (leader epoch, in-sync replicas, consumer, group, member, delivery count…)."""

    event: str
    time_ms: int
    topic: str
    partition: int
    offset: int
    trace_id: str | None
    details: dict[str, Any]


@dataclass(frozen=True)
class ShareGroupDescription:
    group_id: str
    members: list[str]  # seen by a partition leader within the last 45 s
    partitions: list[SharePartitionState]
    dead_letter_topics: list[str]


@dataclass(frozen=True)
class DeadLetter:
    """A record in a dead-letter topic, with where it came from and why (its ``dlq.*``
    headers)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    original_topic: str
    original_partition: int
    original_offset: int
    delivery_count: int
    reason: str
    error: str
    group_id: str


@dataclass(frozen=True)
class Acl:
    """One Kafka-style access rule: ``principal`` (``"User:alice"``, ``"User:*"``) may
    (``permission="allow"``) or may not (``"deny"``, which wins) perform ``operation`` on the
    resources of ``resource_type`` named ``name`` (``pattern="literal"``; ``"*"`` is every
    name) or starting with ``name`` (``pattern="prefixed"``).

    resource_type: topic, group, share_group, transactional_id, cluster (name ``"cluster"``).
    operation: read, write, create, delete, alter, describe, describe_configs, alter_configs,
    idempotent_write, all.
    """

    principal: str
    resource_type: str
    name: str
    operation: str
    permission: str = "allow"
    pattern: str = "literal"


@dataclass(frozen=True)
class UserDescription:
    """A user as ``admin.list_users()`` shows it (never its credentials)."""

    name: str
    tenant: str | None
    superuser: bool
    mechanisms: tuple[str, ...]


@dataclass(frozen=True)
class QuotaEntity:
    """Who a quota applies to (Kafka's quota entity): a user, a client id, a user's client id,
    or every user of a tenant. A user's own quota wins over its tenant's; (user, client id)
    wins over both."""

    user: str | None = None
    client_id: str | None = None
    tenant: str | None = None
