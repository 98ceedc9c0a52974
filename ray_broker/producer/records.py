"""Checks of what callers hand to ``send()`` and ``send_batch()``, before anything is queued:
a bad record fails in the caller's thread with a typed error, never later in the sender."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ray_broker.errors import InvalidPartitions, InvalidRecord, SerializationError
from ray_broker.storage.schema import BROKER_COLUMNS
from ray_broker.structs import TopicMetadata

# The largest record timestamp accepted (int64 milliseconds).
MAX_TIMESTAMP_MS = 2**63 - 1


def serialize(obj: Any, serializer: Callable[[Any], bytes] | None, what: str) -> bytes | None:
    if obj is None:
        return None
    if serializer is not None:
        obj = serializer(obj)
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    raise SerializationError(
        f"{what} must be bytes, got {type(obj).__name__}; pass {what}_serializer= "
        f"(e.g. str.encode or json) to the producer"
    )


def header_list(headers: Sequence[tuple[str, bytes | None]]) -> list[dict[str, Any]]:
    """Headers in the log's struct form; raises InvalidRecord / SerializationError."""
    if isinstance(headers, (str, bytes)) or not isinstance(headers, Sequence):
        raise InvalidRecord(f"headers are a list of (str, bytes) pairs, got {headers!r}")
    out = []
    for item in headers:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise InvalidRecord(f"headers are (str, bytes) pairs, got {item!r}")
        try:
            item[0].encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRecord(f"header name {item[0]!r} is not valid Unicode text") from None
        if item[1] is not None and not isinstance(item[1], bytes):
            raise SerializationError(f"header {item[0]!r} value must be bytes or None")
        out.append({"key": item[0], "value": item[1]})
    return out


def headers_size(headers: list[dict[str, Any]]) -> int:
    """Bytes the headers count towards max.message.bytes, as the broker counts them."""
    return sum(len(h["key"].encode()) + len(h["value"] or b"") for h in headers)


def check_timestamp(timestamp_ms: Any) -> None:
    if (
        not isinstance(timestamp_ms, int)
        or isinstance(timestamp_ms, bool)
        or not 0 <= timestamp_ms <= MAX_TIMESTAMP_MS
    ):
        raise InvalidRecord(
            f"timestamp_ms must be an int of milliseconds in [0, {MAX_TIMESTAMP_MS}], "
            f"got {timestamp_ms!r}"
        )


def check_partition(partition: Any, metadata: TopicMetadata) -> None:
    if (
        not isinstance(partition, int)
        or isinstance(partition, bool)
        or not 0 <= partition < metadata.num_partitions
    ):
        raise InvalidPartitions(
            f"partition {partition!r} does not exist; topic {metadata.name!r} has partitions "
            f"0..{metadata.num_partitions - 1}",
            topic=metadata.name,
            partition=partition if isinstance(partition, int) else None,
        )


def check_priority(priority: Any, metadata: TopicMetadata) -> None:
    """Raises InvalidRecord unless ``priority`` is one of the topic's priority levels."""
    levels = int(metadata.config.get("priority.levels", 1))
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority < levels:
        raise InvalidRecord(
            f"priority {priority!r} is not a level of topic {metadata.name!r}: its "
            f"priority.levels={levels} allows 0..{levels - 1}"
        )


def check_table(table: Any, metadata: TopicMetadata) -> pa.Table:
    """The table of a send_batch() call, checked whole; raises InvalidRecord /
    InvalidPartitions unless every row fits."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if not isinstance(table, pa.Table):
        raise InvalidRecord(f"send_batch takes a pyarrow Table, got {type(table).__name__}")
    if "value" not in table.column_names:
        raise InvalidRecord("send_batch needs a 'value' column")
    text_or_bytes = (
        pa.types.is_binary,
        pa.types.is_large_binary,
        pa.types.is_string,  # stored as its UTF-8 bytes, as the log does
        pa.types.is_large_string,
    )
    reserved = [name for name in BROKER_COLUMNS if name in table.column_names]
    if reserved:
        raise InvalidRecord(f"columns {reserved} are the broker's own; remove them")
    types = {
        "value": text_or_bytes,
        "key": text_or_bytes,
        "timestamp": (pa.types.is_integer, pa.types.is_timestamp),
        "partition": (pa.types.is_integer,),
        "priority": (pa.types.is_integer,),
        "trace": (pa.types.is_boolean,),
    }
    for name, accepted in types.items():
        if name in table.column_names:
            column_type = table.schema.field(name).type
            if not any(check(column_type) for check in accepted) and not pa.types.is_null(
                column_type
            ):
                raise InvalidRecord(f"column {name!r} of type {column_type} is not allowed")
    if "timestamp" in table.column_names:
        stamps = table.column("timestamp").cast(pa.int64())
        if stamps.null_count or (len(stamps) and pc.min(stamps).as_py() < 0):
            raise InvalidRecord("timestamps must be present and >= 0 (ms since the epoch)")
    if "partition" in table.column_names:
        parts = table.column("partition")
        if parts.null_count:
            raise InvalidRecord("the partition column has nulls; give every row a partition")
        if len(parts):
            low, high = pc.min(parts).as_py(), pc.max(parts).as_py()
            if low < 0 or high >= metadata.num_partitions:
                raise InvalidPartitions(
                    f"partitions {low}..{high} requested; topic {metadata.name!r} has partitions "
                    f"0..{metadata.num_partitions - 1}; nothing was sent",
                    topic=metadata.name,
                )
    return table
