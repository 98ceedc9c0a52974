"""Every named limit and default of the broker and its clients, validated with pydantic.

Imported by the actors and the clients alike, so it imports nothing of the client API and no
Ray; below it sit only ``errors`` and the storage layer, whose ``LogConfig`` (the log's own
settings) ``TopicConfig`` extends with what only the broker enforces.

Clients accept kafka-python keyword names (``linger_ms``) and Kafka's dotted names
(``"linger.ms"``). Unknown keys raise ``InvalidConfig`` instead of being ignored, so a typo is
found at construction time, not in production.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ray_broker.errors import (
    BrokerError,
    InvalidConfig,
    InvalidGroupId,
    InvalidTopicName,
    InvalidTransactionalId,
)
from ray_broker.storage.config import SEGMENT_BYTES, LogConfig, merge_config, parse_config

# Ray's built-in resource of the head node: actors that must live there ask for a sliver of it.
HEAD_NODE_RESOURCE = "node:__internal_head__"

__all__ = [
    "BrokerConfig",
    "ConsumerConfig",
    "LogConfig",
    "ProducerConfig",
    "TopicConfig",
    "merge_config",
    "parse_config",
]

DEFAULT_NAMESPACE = "ray_broker"
# The root of every namespace's data; each broker namespace keeps its data in its own
# subdirectory (``default_data_dir``), so two namespaces never share a metadata log.
DEFAULT_DATA_ROOT = Path(os.environ.get("RAY_BROKER_DATA_DIR", Path.home() / ".ray_broker"))
CONTROLLER_NAME = "ray_broker.controller"
GROUP_COORDINATOR_NAME = "ray_broker.group_coordinator"
TRANSACTION_COORDINATOR_NAME = "ray_broker.transaction_coordinator"
DELAY_SCHEDULER_NAME = "ray_broker.delay_scheduler"
# Delayed records wait here until the delay scheduler moves them to their topic.
DELAY_TOPIC = "__delay_schedule"
# The header naming the topic a scheduled record is for (``ray_broker/delay_index.py`` has the
# rest): the schedule partition checks that its writer may write that topic.
DELAY_TARGET_HEADER = "delay.topic"
# Trace events of traced records (actors/partition/message_trace.py), and the header naming a trace.
TRACE_TOPIC = "__message_trace"
TRACE_ID_HEADER = "trace.id"
# Transactional producers get ids below this bound from the transaction coordinator; idempotent
# producers without a transactional id draw random ids above it, so the two never collide.
TRANSACTIONAL_ID_SPACE = 2**40
# Internal state lives under ``<data_dir>/__internal/``, outside the topic namespace: topic names
# starting with "__" are reserved, so no topic can ever share a directory with it.
INTERNAL_DIR = "__internal"
RESERVED_PREFIX = "__"
TOPIC_NAME_MAX_CHARS = 249
GROUP_ID_MAX_CHARS = 249
DAY_MS = 86_400_000
MIN_SESSION_TIMEOUT_MS = 100
MAX_SESSION_TIMEOUT_MS = 1_800_000
MAX_PARTITIONS = 10_000
MAX_PRIORITY_LEVELS = 10
GROUP_INITIAL_REBALANCE_DELAY_MS = 3_000  # Kafka's default

_MODEL = ConfigDict(
    populate_by_name=True, extra="forbid", frozen=True, arbitrary_types_allowed=True
)


class TopicConfig(LogConfig):
    """A topic's settings: the log's plus replication's."""

    min_insync_replicas: int = Field(1, alias="min.insync.replicas", ge=1)
    # A follower that has not caught up for this long leaves the in-sync replicas.
    replica_lag_time_max_ms: int = Field(30_000, alias="replica.lag.time.max.ms", ge=10)
    unclean_leader_election_enable: bool = Field(False, alias="unclean.leader.election.enable")
    # Idempotent-producer state of a producer id not seen for this long is dropped (Kafka's
    # default: 7 days); it bounds the state one partition keeps per producer ever seen.
    producer_id_expiration_ms: int = Field(
        7 * 24 * 3_600_000, alias="producer.id.expiration.ms", ge=1_000
    )
    # Rolled segments wait in memory for their Parquet write; past this many bytes (never less
    # than one segment.bytes) writes wait for sealing to catch up, then get a retriable
    # BrokerBusy: memory stays about two segments per partition however large the backlog.
    log_unsealed_bytes_max: int = Field(
        SEGMENT_BYTES, alias="log.unsealed.bytes.max", ge=1024 * 1024
    )
    # --- share groups (queue semantics, KIP-932) and priorities ---
    # How long a share-group member holds a delivered record before it is delivered again.
    share_record_lock_duration_ms: int = Field(
        30_000, alias="share.record.lock.duration.ms", ge=100, le=3_600_000
    )
    # Deliveries of one record before it goes to the dead-letter topic (Kafka: 5, 2..10).
    share_delivery_count_limit: int = Field(5, alias="share.delivery.count.limit", ge=1, le=100)
    # Offsets one share partition tracks past its start (Kafka's
    # group.share.partition.max.record.locks): bounds the state a leader keeps and saves.
    share_partition_max_record_locks: int = Field(
        5_000, alias="share.partition.max.record.locks", ge=1, le=100_000
    )
    # A released record is delivered again after this long (0: at once).
    share_release_backoff_ms: int = Field(0, alias="share.release.backoff.ms", ge=0, le=DAY_MS)
    # Where a share group's rejected and over-delivered records go; "{topic}" and "{group}" are
    # filled in (characters a topic name may not have become "_"); "" keeps no copy.
    share_dlq_topic: str = Field("{topic}.{group}.dlq", alias="share.dlq.topic", max_length=200)
    # Priority levels 0..levels-1 that producers may give records (send(priority=n)); share
    # groups deliver higher levels first. At most 10, as RabbitMQ advises: each level is a
    # separate ready queue per delivery, and the level lives in the low bits of a record's
    # attributes byte.
    priority_levels: int = Field(1, alias="priority.levels", ge=1, le=MAX_PRIORITY_LEVELS)
    # Starvation rule: every n-th delivery of a share partition takes its oldest available
    # record, whatever the priorities.
    priority_fifo_every: int = Field(10, alias="priority.fifo.every", ge=2, le=1_000)
    # Trace every record of the topic (actors/partition/message_trace.py); off, only records
    # sent with send(trace=True) are traced.
    message_trace: bool = Field(False, alias="message.trace")

    @field_validator("share_dlq_topic")
    @classmethod
    def _dlq_template(cls, template: str) -> str:
        if template:
            name = dead_letter_topic(template, "t", "g")
            if name.startswith(RESERVED_PREFIX) or name in (".", ".."):
                raise ValueError(f"share.dlq.topic {template!r} gives a reserved topic name")
        return template


class BrokerConfig(BaseModel):
    """Broker-wide settings, fixed when the Controller starts."""

    model_config = _MODEL

    data_dir: str = Field(str(DEFAULT_DATA_ROOT / DEFAULT_NAMESPACE), alias="log.dirs")
    auto_create_topics_enable: bool = Field(False, alias="auto.create.topics.enable")
    num_partitions: int = Field(1, alias="num.partitions", ge=1, le=MAX_PARTITIONS)
    default_replication_factor: int = Field(1, alias="default.replication.factor", ge=1)
    # How often partitions apply retention, compaction and segment.ms rolls.
    log_retention_check_interval_ms: int = Field(
        60_000, alias="log.retention.check.interval.ms", ge=10
    )
    # How often the Controller checks for dead nodes (failover, replica replacement).
    controller_check_interval_ms: int = Field(250, alias="controller.check.interval.ms", ge=10)
    # A leader that does not answer the Controller's probe for this long is failed over (a hung
    # process on a live node); its replica rejoins as a follower when it answers again.
    leader_probe_timeout_ms: int = Field(3_000, alias="leader.probe.timeout.ms", ge=100)
    # Whether partition replicas may live on the Ray head node (which runs the GCS and the
    # Controller); off keeps data on worker nodes, as Ray advises for production work.
    replicas_on_head_node: bool = Field(True, alias="replicas.on.head.node")
    # How often the group coordinator checks session timeouts and topic changes.
    group_check_interval_ms: int = Field(100, alias="group.check.interval.ms", ge=10)
    group_metadata_refresh_ms: int = Field(1_000, alias="group.metadata.refresh.ms", ge=10)
    # Consumer groups kept in the coordinator's memory (with members or committed offsets);
    # empty groups are forgotten at once.
    group_max_count: int = Field(100_000, alias="group.max.count", ge=1)
    # A long-poll fetch never waits longer than this, whatever the client asks.
    fetch_max_wait_cap_ms: int = Field(30_000, alias="fetch.max.wait.cap.ms", ge=0)
    # The longest delay a producer may ask (send(delay_ms=...)); the schedule topic keeps
    # records this long plus a day, so a scheduler outage of up to a day loses nothing.
    delay_max_ms: int = Field(7 * DAY_MS, alias="delay.max.ms", ge=1_000, le=365 * DAY_MS)
    delay_schedule_partitions: int = Field(1, alias="delay.schedule.partitions", ge=1, le=64)
    # --- security (ray_broker/security docs in README § Security) ---
    # Off: anyone who reaches Ray may do anything (the embedded demo). On: every call needs a
    # session from connect(username=, password=); once on for a data directory it stays on.
    security_enabled: bool = Field(False, alias="security.enabled")
    # Principals' user names that may do anything (besides users created as superusers).
    super_users: tuple[str, ...] = Field((), alias="super.users")
    # How long a session token lives; clients log in again (SCRAM) before it runs out.
    session_lifetime_ms: int = Field(
        900_000, alias="security.session.lifetime.ms", ge=10_000, le=DAY_MS
    )
    # Quotas are measured over quota.window.num windows of quota.window.size.ms (Kafka: 11 × 1 s).
    quota_window_size_ms: int = Field(1_000, alias="quota.window.size.ms", ge=10, le=60_000)
    quota_window_num: int = Field(11, alias="quota.window.num", ge=2, le=100)
    # Kafka wire-protocol listeners, "HOST:PORT[,HOST:PORT]" (ray_broker/kafka); "" = none.
    kafka_listeners: str = Field("", alias="kafka.listeners", max_length=2_000)
    # Kafka clients' groups wait this long after the first member joins an empty group, so
    # members starting together share one generation (Kafka's default: 3 s).
    group_initial_rebalance_delay_ms: int = Field(
        GROUP_INITIAL_REBALANCE_DELAY_MS, alias="group.initial.rebalance.delay.ms", ge=0, le=300_000
    )

    @field_validator("super_users", mode="before")
    @classmethod
    def _user_list(cls, value: Any) -> Any:
        """Kafka writes ``super.users`` as ``User:a;User:b``; plain names and lists work too."""
        if isinstance(value, str):
            value = [part for part in value.replace(";", ",").split(",") if part.strip()]
        if isinstance(value, (list, tuple)):
            return tuple(str(v).strip().removeprefix("User:") for v in value)
        return value


Acks = Literal[0, 1, -1]
DataPlane = Literal["direct", "ray"]


class ProducerConfig(BaseModel):
    """kafka-python's producer settings that apply to this broker."""

    model_config = _MODEL

    client_id: str = Field("ray-broker-producer", alias="client.id")
    acks: Acks = -1
    linger_ms: int = Field(5, alias="linger.ms", ge=0)
    # Records per partition batch; the sender ships a batch when it holds this many.
    batch_size: int = Field(16_384, alias="batch.size", ge=1)
    # Bytes the producer may hold unsent across partitions before send() blocks.
    buffer_memory: int = Field(256 * 1024 * 1024, alias="buffer.memory", ge=1024)
    max_block_ms: int = Field(60_000, alias="max.block.ms", ge=0, le=DAY_MS)
    max_in_flight_requests_per_connection: int = Field(
        5, alias="max.in.flight.requests.per.connection", ge=1, le=64
    )
    delivery_timeout_ms: int = Field(120_000, alias="delivery.timeout.ms", ge=1, le=DAY_MS)
    request_timeout_ms: int = Field(30_000, alias="request.timeout.ms", ge=1, le=DAY_MS)
    retry_backoff_ms: int = Field(100, alias="retry.backoff.ms", ge=0)
    enable_idempotence: bool = Field(True, alias="enable.idempotence")
    # Set it to send in transactions (init_transactions() first); one id per producing
    # application instance, stable across its restarts, so a restart fences the old one.
    transactional_id: str | None = Field(None, alias="transactional.id", min_length=1)
    transaction_timeout_ms: int = Field(
        60_000, alias="transaction.timeout.ms", ge=1, le=15 * 60 * 1000
    )
    key_serializer: Callable[[Any], bytes] | None = Field(None, alias="key.serializer")
    value_serializer: Callable[[Any], bytes] | None = Field(None, alias="value.serializer")
    metadata_max_age_ms: int = Field(300_000, alias="metadata.max.age.ms", ge=0)
    # How records reach partition leaders: "direct" connections (ray_broker/data_plane.py),
    # falling back to Ray calls where a leader cannot be reached, or "ray" calls only.
    data_plane: DataPlane = Field("direct", alias="data.plane")

    @field_validator("acks", mode="before")
    @classmethod
    def _acks(cls, value: Any) -> int:
        mapping = {"all": -1, "-1": -1, "0": 0, "1": 1}
        if isinstance(value, str) and value in mapping:
            return mapping[value]
        return value


class ConsumerConfig(BaseModel):
    """kafka-python's consumer settings that apply to this broker."""

    model_config = _MODEL

    client_id: str = Field("ray-broker-consumer", alias="client.id")
    group_id: str | None = Field(None, alias="group.id")
    # read_committed: only records of committed transactions (and non-transactional ones),
    # up to the last stable offset. Kafka's default is read_uncommitted.
    isolation_level: Literal["read_uncommitted", "read_committed"] = Field(
        "read_uncommitted", alias="isolation.level"
    )
    auto_offset_reset: Literal["earliest", "latest", "none"] = Field(
        "latest", alias="auto.offset.reset"
    )
    enable_auto_commit: bool = Field(True, alias="enable.auto.commit")
    # As the producer's (ProducerConfig.data_plane); a filtered consumer fetches by Ray.
    data_plane: DataPlane = Field("direct", alias="data.plane")
    auto_commit_interval_ms: int = Field(5_000, alias="auto.commit.interval.ms", ge=0)
    fetch_max_wait_ms: int = Field(500, alias="fetch.max.wait.ms", ge=0)
    # Records per fetch call to one partition (Arrow slices: large is cheap).
    # The broker answers at most 1,000,000 records / 64 MiB per fetch, so larger asks are refused.
    max_partition_fetch_records: int = Field(
        100_000, alias="max.partition.fetch.records", ge=1, le=1_000_000
    )
    max_partition_fetch_bytes: int = Field(
        64 * 1024 * 1024, alias="max.partition.fetch.bytes", ge=1, le=64 * 1024 * 1024
    )
    max_poll_records: int = Field(500, alias="max.poll.records", ge=1)
    # Kafka bounds sessions by group.min/max.session.timeout.ms; shorter ones flap.
    session_timeout_ms: int = Field(
        10_000, alias="session.timeout.ms", ge=MIN_SESSION_TIMEOUT_MS, le=MAX_SESSION_TIMEOUT_MS
    )
    heartbeat_interval_ms: int = Field(3_000, alias="heartbeat.interval.ms", ge=1)
    max_poll_interval_ms: int = Field(300_000, alias="max.poll.interval.ms", ge=1)
    request_timeout_ms: int = Field(30_000, alias="request.timeout.ms", ge=1, le=DAY_MS)
    retry_backoff_ms: int = Field(100, alias="retry.backoff.ms", ge=0)
    key_deserializer: Callable[[bytes], Any] | None = Field(None, alias="key.deserializer")
    value_deserializer: Callable[[bytes], Any] | None = Field(None, alias="value.deserializer")
    metadata_max_age_ms: int = Field(300_000, alias="metadata.max.age.ms", ge=0)
    group_instance_id: str | None = Field(None, alias="group.instance.id")
    partition_assignment_strategy: Literal[
        "range", "roundrobin", "sticky", "cooperative-sticky"
    ] = Field("range", alias="partition.assignment.strategy")
    # Iteration (``for record in consumer``) stops after this long without a record; -1: never.
    consumer_timeout_ms: int = Field(-1, alias="consumer.timeout.ms", ge=-1)


class ShareConsumerConfig(BaseModel):
    """A share-group member's settings (Kafka's KafkaShareConsumer names)."""

    model_config = _MODEL

    client_id: str = Field("ray-broker-share-consumer", alias="client.id")
    group_id: str = Field(alias="group.id")
    # implicit: every record a poll returned is accepted at the next poll (or commit/close)
    # unless acknowledged otherwise; explicit: only acknowledge() answers (Kafka's default is
    # implicit).
    share_acknowledgement_mode: Literal["implicit", "explicit"] = Field(
        "implicit", alias="share.acknowledgement.mode"
    )
    # Where a share group new to a partition starts (Kafka's share.auto.offset.reset: latest).
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "latest", alias="share.auto.offset.reset"
    )
    max_poll_records: int = Field(500, alias="max.poll.records", ge=1, le=10_000)
    fetch_max_wait_ms: int = Field(500, alias="fetch.max.wait.ms", ge=0)
    request_timeout_ms: int = Field(30_000, alias="request.timeout.ms", ge=1, le=DAY_MS)
    retry_backoff_ms: int = Field(100, alias="retry.backoff.ms", ge=0)
    key_deserializer: Callable[[bytes], Any] | None = Field(None, alias="key.deserializer")
    value_deserializer: Callable[[bytes], Any] | None = Field(None, alias="value.deserializer")


# The broker settings any authenticated client may read (what clients size themselves by);
# the rest — data directory, listener addresses, superusers — needs describe_configs on the
# cluster.
CLIENT_VISIBLE_CONFIG = frozenset(
    {
        "auto.create.topics.enable",
        "default.replication.factor",
        "delay.max.ms",
        "delay.schedule.partitions",
        "fetch.max.wait.cap.ms",
        "num.partitions",
        "security.enabled",
        "security.session.lifetime.ms",
    }
)

# Used with fullmatch: `^...$` with match() admits a name ending in "\n".
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]+")


def validate_topic_name(name: object, internal: bool = False) -> str:
    """Kafka's topic naming rules (``internal``: the broker's own topics, named "__...").

    Raises:
        InvalidTopicName: the name is empty, too long, "." or "..", or has other characters.
    """
    if not isinstance(name, str):
        raise InvalidTopicName(f"a topic name is a str, got {type(name).__name__}")
    if not name or name in (".", ".."):
        raise InvalidTopicName(f"topic name {name!r} is not allowed")
    if len(name) > TOPIC_NAME_MAX_CHARS:
        raise InvalidTopicName(
            f"topic name is {len(name)} characters; the limit is {TOPIC_NAME_MAX_CHARS}"
        )
    if not _TOPIC_NAME.fullmatch(name):
        raise InvalidTopicName(
            f"topic name {name!r} may only contain ASCII letters, digits, '.', '_' and '-'"
        )
    if name.startswith(RESERVED_PREFIX) != internal:
        if internal:
            raise InvalidTopicName(f"an internal topic's name starts with {RESERVED_PREFIX!r}")
        raise InvalidTopicName(
            f"topic name {name!r} is reserved: names starting with {RESERVED_PREFIX!r} belong "
            "to the broker's internal state"
        )
    return name


# The headers a dead-letter copy carries, in this order (see ray_broker/dead_letters.py).
DLQ_HEADERS = (
    "dlq.original.topic",
    "dlq.original.partition",
    "dlq.original.offset",
    "dlq.delivery.count",
    "dlq.reason",
    "dlq.error",
    "dlq.group",
)


def dead_letter_topic(template: str, topic: str, group: str) -> str:
    """The dead-letter topic of ``group`` reading ``topic``: ``template`` with ``{topic}`` and
    ``{group}`` filled in; characters a topic name may not have become ``_``.

    Raises:
        ValueError: other placeholders or broken braces in ``template``.
    """
    try:
        name = template.format(topic=topic, group=group)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"share.dlq.topic {template!r} may use only {{topic}} and {{group}}: {exc}"
        ) from None
    name = re.sub(r"[^a-zA-Z0-9._-]", "_", name)[:TOPIC_NAME_MAX_CHARS]
    return name


def validate_group_id(group_id: object) -> str:
    """A consumer group id: any printable text up to ``GROUP_ID_MAX_CHARS`` characters.

    Raises:
        InvalidGroupId: not a str, empty, too long, or with control characters (a NUL once
            broke the coordinator's recovery).
    """
    return _printable_id(group_id, "group id", InvalidGroupId)


def validate_transactional_id(transactional_id: object) -> str:
    """A transactional id: the same rules as a group id (it is stored in the transaction log
    and shown by tools the way group ids are).

    Raises:
        InvalidTransactionalId: not a str, empty, too long, or with control characters.
    """
    return _printable_id(transactional_id, "transactional id", InvalidTransactionalId)


def _printable_id(value: object, what: str, error: type[BrokerError]) -> str:
    if not isinstance(value, str):
        raise error(f"a {what} is a str, got {type(value).__name__}")
    if not value or len(value) > GROUP_ID_MAX_CHARS:
        raise error(f"a {what} has 1 to {GROUP_ID_MAX_CHARS} characters, got {len(value)}")
    if any(not ch.isprintable() for ch in value):
        raise error(f"{what} {value!r} contains control or unprintable characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{what} {value!r} is not valid Unicode text") from None
    return value


def default_data_dir(namespace: str) -> Path:
    """Where a namespace keeps its data unless told otherwise: ``~/.ray_broker/<namespace>``."""
    return DEFAULT_DATA_ROOT / namespace


def client_config(model: type[BaseModel], options: dict[str, Any]) -> Any:
    """Build a client config from keyword or dotted options.

    Raises:
        InvalidConfig: an unknown option or a bad value.
    """
    if not isinstance(options, dict):
        raise InvalidConfig(f"options must be a dict, got {type(options).__name__}")
    return parse_config(model, options)


def parse_kafka_listeners(spec: object) -> list[tuple[str, int]]:
    """``"HOST:PORT[,HOST:PORT...]"`` (a ``PLAINTEXT://`` or ``SASL_PLAINTEXT://`` scheme is
    accepted and ignored: security follows the broker's). Port 0 picks a free port.

    Raises:
        InvalidConfig: not a list of host:port pairs.
    """
    if isinstance(spec, str):
        items = [item.strip() for item in spec.split(",") if item.strip()]
    elif isinstance(spec, (list, tuple)):
        items = [str(item).strip() for item in spec]
    else:
        raise InvalidConfig(f"kafka.listeners is 'HOST:PORT[,HOST:PORT]', got {spec!r}")
    listeners = []
    for item in items:
        address = item.split("://", 1)[-1]
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65_535:
            raise InvalidConfig(f"a Kafka listener address is HOST:PORT, got {item!r}")
        listeners.append((host.strip("[]"), int(port)))
    return listeners
