"""Records as JSON, in the shape of Confluent's REST Proxy v3.

A key or a value is ``{"type": "JSON" | "STRING" | "BINARY", "data": ...}``: JSON data is
sent as its compact UTF-8 encoding, STRING as UTF-8, BINARY as base64. Records read back show
UTF-8 text as STRING and anything else as BINARY (base64), so any byte string survives the
round trip (``ray_broker/views.py`` shows them). Header values are base64, as Confluent's.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ray_broker.errors import InvalidRequest

MAX_BATCH_ENTRIES = 10_000
MAX_HEADERS = 100


class Data(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["JSON", "STRING", "BINARY"] = "JSON"
    data: Any = None


class Header(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256)
    value: str | None = None  # base64


class ProduceRecord(BaseModel):
    """One record to produce; ``partition_id`` absent: the key's partition (murmur2), or
    round robin without a key. ``priority`` and ``delay_ms`` are ray-broker's queue
    features (priority delivery to share groups; delivery later)."""

    model_config = ConfigDict(extra="forbid")

    partition_id: int | None = Field(default=None, ge=0)
    key: Data | None = None
    value: Data | None = None
    headers: list[Header] = Field(default_factory=list, max_length=MAX_HEADERS)
    timestamp: datetime | None = None
    priority: int | None = Field(default=None, ge=0, le=255)
    delay_ms: int | None = Field(default=None, ge=0)


class BatchEntry(ProduceRecord):
    id: str = Field(min_length=1, max_length=256)


class ProduceBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: list[BatchEntry] = Field(min_length=1, max_length=MAX_BATCH_ENTRIES)

    @field_validator("entries")
    @classmethod
    def _unique_ids(cls, entries: list[BatchEntry]) -> list[BatchEntry]:
        if len({entry.id for entry in entries}) != len(entries):
            raise ValueError("entry ids must be unique within a batch")
        return entries


def encoded(data: Data | None) -> bytes | None:
    """Raises InvalidRequest: BINARY data that is not base64, STRING data not a string."""
    if data is None or (data.data is None and data.type != "JSON"):
        return None
    if data.type == "JSON":
        return None if data.data is None else json.dumps(data.data, separators=(",", ":")).encode()
    if not isinstance(data.data, str):
        raise InvalidRequest(f"{data.type} data is a string", status=422)
    if data.type == "STRING":
        return data.data.encode()
    try:
        return base64.b64decode(data.data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("BINARY data is not valid base64", status=422) from None


def send_arguments(record: ProduceRecord) -> dict[str, Any]:
    """``Producer.send`` keyword arguments for ``record``.

    Raises:
        InvalidRequest: undecodable BINARY data or header value.
    """
    headers = []
    for header in record.headers:
        value = None
        if header.value is not None:
            try:
                value = base64.b64decode(header.value, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidRequest(
                    f"header {header.name!r}: the value is not valid base64", status=422
                ) from None
        headers.append((header.name, value))
    arguments: dict[str, Any] = {
        "key": encoded(record.key),
        "value": encoded(record.value),
        "headers": headers or None,
        "partition": record.partition_id,
    }
    if record.timestamp is not None:
        arguments["timestamp_ms"] = int(record.timestamp.timestamp() * 1000)
    if record.priority is not None:
        arguments["priority"] = record.priority
    if record.delay_ms:
        arguments["delay_ms"] = record.delay_ms
    return arguments
