"""DelayIndex, the delay scheduler's decisions, without Ray: due order, fired markers,
failed rounds, compaction and malformed records."""

from __future__ import annotations

import pyarrow as pa

from ray_broker.delay_index import (
    DUE_HEADER,
    FIRED_HEADER,
    PARTITION_HEADER,
    PRIORITY_HEADER,
    TOPIC_HEADER,
    DelayIndex,
    fired_ranges,
)
from ray_broker.storage.schema import HEADER_TYPE


def schedule_table(first_offset: int, dues: list, marker: bytes | None = None, topic=b"orders"):
    headers, values = [], []
    for i, due in enumerate(dues):
        if due is None:  # a fired marker
            headers.append([{"key": FIRED_HEADER, "value": b"1"}])
            values.append(marker)
            continue
        headers.append(
            [
                {"key": "app", "value": b"h%d" % i},
                {"key": TOPIC_HEADER, "value": topic},
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
    index.add(0, schedule_table(0, [300, 100, 200]))
    index.add(1, schedule_table(0, [100, 150]))
    assert index.next_due() == 100 and len(index) == 5
    assert len(index.due(now_ms=99, limit=10)) == 0
    due = index.due(now_ms=200, limit=10)
    tables = index.tables(due)
    assert list(tables) == ["orders"]
    assert tables["orders"].column("value").to_pylist() == [b"v1", b"v0", b"v1", b"v2"]
    assert tables["orders"].column("partition").to_pylist() == [3, 3, 3, 3]
    assert index.offsets_by_partition(due) == {0: [1, 2], 1: [0, 1]}
    index.fired(due)
    assert len(index) == 1 and index.next_due() == 300


def test_a_round_is_bounded_and_keeps_due_order_across_chunks():
    index = DelayIndex()
    index.add(0, schedule_table(0, [10, 30, 50]))
    index.add(0, schedule_table(3, [20, 40]))
    first = index.due(now_ms=100, limit=3)
    assert [index.chunks[c].due[r] for c, r in first.order] == [10, 20, 30]
    index.fired(first)
    second = index.due(now_ms=100, limit=10)
    assert [index.chunks[c].due[r] for c, r in second.order] == [40, 50]


def test_a_failed_round_puts_the_records_back():
    index = DelayIndex()
    index.add(0, schedule_table(0, [10, 20]))
    index.failed(index.due(now_ms=50, limit=10))
    again = index.due(now_ms=50, limit=10)
    assert index.offsets_by_partition(again) == {0: [0, 1]}


def test_fired_markers_replayed_after_a_restart_remove_their_records():
    index = DelayIndex()
    index.add(0, schedule_table(0, [10, 20, 30]))
    index.add(0, schedule_table(3, [None], marker=fired_ranges([0, 2])))
    assert len(index) == 1
    assert index.offsets_by_partition(index.due(now_ms=100, limit=10)) == {0: [1]}


def test_a_fired_marker_read_together_with_its_records_removes_them():
    index = DelayIndex()
    together = pa.concat_tables(
        [schedule_table(0, [10, 20]), schedule_table(2, [None], marker=fired_ranges([1]))]
    )
    index.add(0, together)
    assert len(index) == 1
    assert index.offsets_by_partition(index.due(now_ms=100, limit=10)) == {0: [0]}


def test_fired_chunks_are_dropped_and_half_fired_ones_compacted():
    index = DelayIndex()
    index.add(0, schedule_table(0, [5] * 20_000 + [10**12]))
    before = index.memory_bytes
    index.fired(index.due(now_ms=10, limit=100_000))
    assert len(index) == 1 and index.memory_bytes < before / 10
    last = index.due(now_ms=10**12, limit=10)
    assert index.tables(last)["orders"].column("value").to_pylist() == [b"v20000"]
    index.fired(last)
    assert index.chunks == {} and index.memory_bytes == 0


def test_priorities_travel_and_malformed_headers_are_counted():
    index = DelayIndex()
    good = schedule_table(0, [10])
    ranked = pa.table(
        {
            "offset": pa.array([1], pa.int64()),
            "key": pa.array([b"k"], pa.binary()),
            "value": pa.array([b"p"], pa.binary()),
            "headers": pa.array(
                [
                    [
                        {"key": TOPIC_HEADER, "value": b"jobs"},
                        {"key": DUE_HEADER, "value": b"10"},
                        {"key": PRIORITY_HEADER, "value": b"2"},
                    ]
                ],
                HEADER_TYPE,
            ),
        }
    )
    bad = pa.table(
        {
            "offset": pa.array([2, 3], pa.int64()),
            "key": pa.array([None, None], pa.binary()),
            "value": pa.array([b"x", b"y"], pa.binary()),
            "headers": pa.array(
                [[{"key": DUE_HEADER, "value": b"soon"}], [{"key": DUE_HEADER, "value": b"5"}]],
                HEADER_TYPE,
            ),
        }
    )
    index.add(0, pa.concat_tables([good, ranked, bad]))
    assert len(index) == 2 and index.malformed == 2
    tables = index.tables(index.due(now_ms=10, limit=10))
    assert tables["jobs"].column("priority").to_pylist() == [2]
    assert tables["jobs"].column("partition").to_pylist() == [-1]
    assert "priority" not in tables["orders"].column_names
