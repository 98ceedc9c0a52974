"""A dead letter as it lands in the dead-letter topic: the original record (timestamp, key,
value, headers) plus headers naming where it came from and why it died (``DLQ_HEADERS``:
topic, partition, offset, delivery count, reason, error, share group), as RabbitMQ's
``x-death`` and Kafka Connect's DLQ headers do."""

from __future__ import annotations

import pyarrow as pa

from ray_broker.actors.partition.share_state import Delivery
from ray_broker.config import DLQ_HEADERS


def dead_letter_rows(
    records: pa.Table, deliveries: dict[int, Delivery], topic: str, partition: int, group: str
) -> pa.Table:
    """``records`` (read from the log, with an ``offset`` column) as dead letters;
    ``deliveries`` says how each was delivered and why it died."""
    headers = []
    offsets = records.column("offset").to_pylist()
    for offset, original in zip(offsets, records.column("headers").to_pylist(), strict=True):
        delivery = deliveries[offset]
        values = (
            topic,
            str(partition),
            str(offset),
            str(delivery.count),
            delivery.reason or "rejected",
            delivery.error or "",
            group,
        )
        extra = [{"key": k, "value": v.encode()} for k, v in zip(DLQ_HEADERS, values, strict=True)]
        headers.append((original or []) + extra)
    return pa.table(
        {
            "timestamp": records.column("timestamp"),
            "key": records.column("key"),
            "value": records.column("value"),
            "headers": pa.array(headers, records.schema.field("headers").type),
        }
    )
