"""DelayIndex, the delay scheduler's decisions, without Ray: due order, fired markers,
failed rounds, compaction and malformed records."""

from __future__ import annotations

import pyarrow as pa

from ray_broker.actors.delay_index import (
    DUE_HEADER,
    FIRED_HEADER,
    PARTITION_HEADER,
    TOPIC_HEADER,
    DelayIndex,
    fired_ranges,
)
from ray_broker.storage.schema import HEADER_TYPE


def schedule_table(first_offset: int, dues: list[int | None], marker: bytes | None = None):
    headers, values = [], []
    for i, due in enumerate(dues):
        if due is None:  # a fired marker
            headers.append([{"key": FIRED_HEADER, "value": b"1"}])
            values.append(marker)
            continue
        headers.append(
            [
                {"key": "app", "value": b"h%d" % i},
                {"key": TOPIC_HEADER, "value": b"orders"},
                {"key": PARTITION_HEADER, "value": b"3"},
                {"key": DUE_HEADER, "value": str(due).encode()},
            ]
        )
        values.append(b"v%d" % (first_offset + i))
    return pa.table(
        {
            "offset": pa.array(range(first_offset, first_offset + len(dues)), pa.int64()),
            "key": pa.array([None] * len(dues), pa.binary()),
            "value": pa.array(values, pa.binary()),
            "headers": pa.array(headers, HEADER_TYPE),
        }
    )


def test_records_come_out_in_due_order_when_due():
    index = DelayIndex()
    index.add(0, schedule_table(0, [300, 100, 200, 100]))
    assert index.next_due() == 100 and len(index) == 4
    assert index.due(now_ms=99, limit=10) == []
    due = index.due(now_ms=200, limit=10)
    assert [(e.due_ms, e.offset) for e in due] == [(100, 1), (100, 3), (200, 2)]
    [(_, target, row)] = index.records(due[:1])
    assert (target.topic, target.partition, row["value"]) == ("orders", 3, b"v1")
    assert target.headers == [("app", b"h1"), (DUE_HEADER, b"100")]  # internal ones stripped
    index.fired(due)
    assert len(index) == 1 and index.next_due() == 300


def test_a_failed_round_puts_the_records_back():
    index = DelayIndex()
    index.add(0, schedule_table(0, [10, 20]))
    due = index.due(now_ms=50, limit=10)
    index.failed(due)
    assert [e.offset for e in index.due(now_ms=50, limit=10)] == [0, 1]


def test_fired_markers_replayed_after_a_restart_remove_their_records():
    index = DelayIndex()
    index.add(0, schedule_table(0, [10, 20, 30]))
    index.add(0, schedule_table(3, [None], marker=fired_ranges([0, 2])))
    assert len(index) == 1
    assert [e.offset for e in index.due(now_ms=100, limit=10)] == [1]
    assert index.memory_bytes > 0


def test_chunks_are_released_and_compacted():
    index = DelayIndex()
    index.add(0, schedule_table(0, [5] * 20_000 + [10**12]))
    index.fired(index.due(now_ms=10, limit=100_000))
    before = index.memory_bytes
    assert index.compact() == 20_000
    assert index.memory_bytes < before / 10
    [(entry, target, row)] = index.records(index.due(now_ms=10**12, limit=10))
    assert row["value"] == b"v20000"


def test_malformed_delay_headers_are_counted_and_skipped():
    index = DelayIndex()
    table = schedule_table(0, [10])
    bad = pa.table(
        {
            "offset": pa.array([1], pa.int64()),
            "key": pa.array([None], pa.binary()),
            "value": pa.array([b"x"], pa.binary()),
            "headers": pa.array([[{"key": DUE_HEADER, "value": b"soon"}]], HEADER_TYPE),
        }
    )
    index.add(0, pa.concat_tables([table, bad]))
    assert len(index) == 1 and index.malformed == 1
