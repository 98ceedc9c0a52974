"""Per-log configuration: Kafka's topic-level log settings, validated once.

Keys are Kafka's dotted names (``segment.bytes``); Python keyword spellings (``segment_bytes``)
are accepted too. Unknown keys and bad values raise ``InvalidConfig`` naming the key, so a typo in
a topic config never silently falls back to a default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ray_broker.errors import InvalidConfig

MIB = 1024 * 1024
DAY_MS = 24 * 60 * 60 * 1000

# The active segment and one rolled segment waiting for Parquet live in memory: about two
# segments per partition is the broker's memory however large the backlog (bench.py --backlog).
SEGMENT_BYTES = 64 * MIB
SEGMENT_MS = 7 * DAY_MS
RETENTION_MS = 3 * DAY_MS  # the mission's "keep them 3 days by default"
DELETE_RETENTION_MS = DAY_MS
MAX_MESSAGE_BYTES = 1 * MIB
PARQUET_ROW_GROUP_RECORDS = 64 * 1024
NO_LIMIT = -1
LOCAL_RETENTION_AS_RETENTION = -2


class LogConfig(BaseModel):
    """Settings a ``Log`` obeys. ``-1`` means "no limit" as in Kafka."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)

    # The active segment lives in memory: bounded like Kafka's (an int32 of bytes).
    segment_bytes: int = Field(SEGMENT_BYTES, alias="segment.bytes", ge=1024, le=2**30)
    segment_ms: int = Field(SEGMENT_MS, alias="segment.ms", ge=1)
    retention_ms: int = Field(RETENTION_MS, alias="retention.ms", ge=NO_LIMIT)
    retention_bytes: int = Field(NO_LIMIT, alias="retention.bytes", ge=NO_LIMIT)
    cleanup_policy: Literal["delete", "compact", "compact,delete", "delete,compact"] = Field(
        "delete", alias="cleanup.policy"
    )
    delete_retention_ms: int = Field(DELETE_RETENTION_MS, alias="delete.retention.ms", ge=0)
    max_message_bytes: int = Field(MAX_MESSAGE_BYTES, alias="max.message.bytes", ge=1, le=2**30)
    # None = leave durability to the OS page cache, Kafka's default.
    flush_messages: int | None = Field(None, alias="flush.messages", ge=1)
    flush_ms: int | None = Field(None, alias="flush.ms", ge=0)
    message_timestamp_type: Literal["CreateTime", "LogAppendTime"] = Field(
        "CreateTime", alias="message.timestamp.type"
    )
    # CreateTime records dated further than this before/after the broker's clock are refused
    # (Kafka's KIP-937): one record from the far future would pin time retention forever.
    message_timestamp_before_max_ms: int = Field(
        2**63 - 1, alias="message.timestamp.before.max.ms", ge=0
    )
    message_timestamp_after_max_ms: int = Field(
        3_600_000, alias="message.timestamp.after.max.ms", ge=0
    )
    segment_compression: Literal["zstd", "lz4", "snappy", "gzip", "none"] = Field(
        "zstd", alias="segment.compression"
    )
    segment_row_group_records: int = Field(
        PARQUET_ROW_GROUP_RECORDS, alias="segment.row.group.records", ge=1
    )
    # Tiered storage (storage/tiered.py): sealed segments older than local.retention.ms move to
    # remote.storage.uri; -2 = as retention.ms (nothing moves before it is deleted), -1 = never.
    remote_storage_enable: bool = Field(False, alias="remote.storage.enable")
    remote_storage_uri: str | None = Field(None, alias="remote.storage.uri", min_length=1)
    local_retention_ms: int = Field(LOCAL_RETENTION_AS_RETENTION, alias="local.retention.ms", ge=-2)

    @model_validator(mode="after")
    def _remote_storage_is_usable(self) -> LogConfig:
        if self.remote_storage_enable and not self.remote_storage_uri:
            raise ValueError("remote.storage.enable needs remote.storage.uri (e.g. s3://bucket/x)")
        if self.remote_storage_enable and self.compacts:
            raise ValueError("remote storage is not supported for compacted topics (as in Kafka)")
        return self

    @property
    def local_retention(self) -> int:
        """How long sealed segments stay local (ms; NO_LIMIT = until deleted)."""
        if self.local_retention_ms == LOCAL_RETENTION_AS_RETENTION:
            return self.retention_ms
        return self.local_retention_ms

    @property
    def compacts(self) -> bool:
        return "compact" in self.cleanup_policy

    @property
    def deletes(self) -> bool:
        return "delete" in self.cleanup_policy

    def to_kafka_dict(self) -> dict[str, Any]:
        """The settings under their dotted Kafka names, as Admin describes them."""
        return self.model_dump(by_alias=True)


def parse_config(model: type[BaseModel], values: Mapping[str, Any] | None) -> Any:
    """Validate ``values`` into ``model``, turning pydantic's report into ``InvalidConfig``.

    Raises:
        InvalidConfig: a key is unknown or a value is out of range.
    """
    if values is not None and not isinstance(values, Mapping):
        raise InvalidConfig(f"a configuration is a mapping of keys to values, got {values!r}")
    try:
        return model.model_validate(dict(values or {}))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "<config>"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown config key {key!r}")
            else:
                problems.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        raise InvalidConfig("invalid configuration: " + "; ".join(problems)) from None


def merge_config(config: BaseModel, updates: Mapping[str, Any]) -> Any:
    """A copy of ``config`` with ``updates`` applied and validated as a whole.

    Raises:
        InvalidConfig: an update key is unknown or a value is out of range.
    """
    merged = config.model_dump(by_alias=True)
    fields = type(config).model_fields
    for key, value in updates.items():
        field = fields.get(key)
        merged[field.alias if field is not None and field.alias else key] = value
    return parse_config(type(config), merged)
