"""How the group coordinator keys its durable documents: a committed offset by (group, topic,
partition), and the offsets a transaction sent by (group, producer id) until its marker."""

from __future__ import annotations

import json

OffsetKey = tuple[str, str, int]  # (group, topic, partition)


def offset_key(group: str, topic: str, partition: int) -> str:
    """A JSON array: any group id or topic name encodes and decodes unambiguously."""
    return json.dumps([group, topic, partition], ensure_ascii=False)


def pending_key(group: str, producer_id: int) -> str:
    """Offsets a transaction sent (``send_offsets_to_transaction``), kept until its marker."""
    return json.dumps({"txn": [group, producer_id]}, ensure_ascii=False)


def decode_pending_key(key: str) -> tuple[str, int] | None:
    if not key.startswith('{"txn"'):
        return None
    group, producer_id = json.loads(key)["txn"]
    return group, producer_id


def decode_offset_key(key: str) -> OffsetKey | None:
    try:
        group, topic, partition = json.loads(key)
    except ValueError:
        return None
    if not (isinstance(group, str) and isinstance(topic, str) and isinstance(partition, int)):
        return None
    return group, topic, partition
