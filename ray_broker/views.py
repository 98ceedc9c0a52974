"""What the broker's objects look like as JSON: one view of a partition, of a group's lag on a
partition, and of a record — for ``ray-broker status``, the CLI's ``--output json``, the
console's HTTP API and its pages.

Field names follow the Python API (``topic``, ``partition``). The HTTP API names them as
Kafka's REST Proxy v3 does (``topic_name``, ``partition_id``); ``rest_names`` is the one place
the two vocabularies meet.

By default bytes are shown as REST Proxy v3 shows them: ``{"type": "STRING", "data": text}``
when they are UTF-8 and ``{"type": "BINARY", "data": base64}`` otherwise, so a reader can
always tell text from binary and get the exact bytes back.
Header values are base64, as REST Proxy's. Line tools (the CLI's JSON lines, the console's
pages) show a key or value as one string instead: the text, or ``base64:…`` for binary.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from typing import Any

from ray_broker.structs import DeadLetter, PartitionInfo, PartitionLag, Record

REST_NAMES = {
    "topic": "topic_name",
    "partition": "partition_id",
    "committed_offset": "current_offset",
    "member_id": "consumer_id",
}


def bytes_view(raw: Any) -> dict[str, Any] | None:
    """A key or value: STRING when it is UTF-8, else BINARY (base64); None stays None. A value
    a deserializer already turned into an object is shown as JSON."""
    if raw is None:
        return None
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        return {"type": "JSON", "data": raw}
    raw = bytes(raw)
    try:
        return {"type": "STRING", "data": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"type": "BINARY", "data": base64.b64encode(raw).decode()}


def bytes_text(raw: Any) -> str | None:
    """A key or value as one string for people and line tools (the CLI): the text itself when
    it is UTF-8, ``base64:…`` for binary; None stays None."""
    shown = bytes_view(raw)
    if shown is None:
        return None
    if shown["type"] == "BINARY":
        return f"base64:{shown['data']}"
    return shown["data"] if shown["type"] == "STRING" else str(shown["data"])


def partition_view(p: PartitionInfo) -> dict[str, Any]:
    return {
        "partition": p.partition,
        "leader": p.leader,
        "leader_node_id": p.leader_node_id,
        "leader_epoch": p.leader_epoch,
        "replicas": list(p.replicas),
        "isr": list(p.isr),
        "log_start_offset": p.log_start_offset,
        "high_watermark": p.high_watermark,
        "log_end_offset": p.log_end_offset,
        "under_replicated": p.under_replicated,
        "offline": p.offline,
    }


def lag_view(p: PartitionLag) -> dict[str, Any]:
    """A consumer group's position on one partition."""
    return {
        "topic": p.topic,
        "partition": p.partition,
        "committed_offset": p.committed_offset,
        "log_end_offset": p.log_end_offset,
        "lag": p.lag,
        "member_id": p.member_id,
    }


def record_view(record: Record, show: Callable[[Any], Any] = bytes_view) -> dict[str, Any]:
    """A record; ``show`` renders its key and value (typed by default, ``bytes_text`` for
    line tools)."""
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": show(record.key),
        "value": show(record.value),
        "headers": [
            {"name": name, "value": None if value is None else base64.b64encode(value).decode()}
            for name, value in record.headers
        ],
    }


def dead_letter_view(d: DeadLetter, show: Callable[[Any], Any] = bytes_view) -> dict[str, Any]:
    """A dead letter with where it came from and why (``show`` as for ``record_view``)."""
    return {**dataclasses.asdict(d), "key": show(d.key), "value": show(d.value)}


def rest_names(view: dict[str, Any]) -> dict[str, Any]:
    """A view with the HTTP API's field names (Kafka REST Proxy v3's)."""
    return {REST_NAMES.get(key, key): value for key, value in view.items()}
