from __future__ import annotations

import os

import pyarrow as pa
import pytest

from ray_broker.errors import (
    InvalidConfig,
    InvalidRecord,
    KafkaStorageError,
    OffsetOutOfRange,
    RecordTooLarge,
)
from ray_broker.storage import RECORD_SCHEMA, LogConfig
from ray_broker.storage.config import parse_config
from tests.storage.conftest import values_batch


def test_append_assigns_dense_offsets_and_read_returns_them(make_log):
    log = make_log()
    assert log.append(values_batch(0, 3)) == (0, 2)
    assert log.append(values_batch(3, 2)) == (3, 4)
    table = log.read(0, 100)
    assert table.schema == RECORD_SCHEMA
    assert table.column("offset").to_pylist() == [0, 1, 2, 3, 4]
    assert table.column("value").to_pylist() == [b"v0", b"v1", b"v2", b"v3", b"v4"]
    assert (log.log_start_offset, log.log_end_offset) == (0, 5)


def test_keys_headers_nulls_and_producer_timestamps_round_trip(make_log, clock):
    log = make_log()
    headers = [[{"key": "trace", "value": b"abc"}], [], None]
    log.append(
        pa.table(
            {
                "key": [b"k", None, b"z"],
                "value": [b"a", None, b"c"],
                "headers": pa.array(headers, type=RECORD_SCHEMA.field("headers").type),
                "timestamp": pa.array([5, None, 7], pa.int64()),
            }
        )
    )
    row = log.read(0, 10).to_pylist()
    assert [r["key"] for r in row] == [b"k", None, b"z"]
    assert [r["value"] for r in row] == [b"a", None, b"c"]
    assert row[0]["headers"] == [{"key": "trace", "value": b"abc"}]
    assert [r["timestamp"] for r in row] == [5, clock.now_ms, 7]


def test_log_append_time_overrides_producer_timestamps(make_log, clock):
    log = make_log(message_timestamp_type="LogAppendTime")
    log.append(pa.table({"value": [b"a"], "timestamp": pa.array([5], pa.int64())}))
    assert log.read(0).column("timestamp").to_pylist() == [clock.now_ms]


def test_string_values_are_accepted_as_binary(make_log):
    log = make_log()
    log.append(pa.table({"value": ["text"]}))
    assert log.read(0).column("value").to_pylist() == [b"text"]


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (pa.table({"key": [b"k"]}), "needs a 'value' column"),
        (pa.table({"value": [1]}), "column 'value' has type int64"),
        (pa.table({"value": [b"a"], "colour": [b"x"]}), "unknown column"),
        (pa.table({"value": pa.array([], pa.binary())}), "empty batch"),
        ([b"not", b"arrow"], "expected a pyarrow RecordBatch or Table"),
    ],
)
def test_bad_batches_raise_invalid_record_and_leave_the_log_unchanged(make_log, batch, message):
    log = make_log()
    log.append(values_batch(0, 2))
    size = log.size_bytes
    with pytest.raises(InvalidRecord, match=message):
        log.append(batch)
    assert (log.log_end_offset, log.size_bytes) == (2, size)
    assert log.read(0).num_rows == 2


def test_record_over_max_message_bytes_is_rejected_by_name(make_log):
    log = make_log(max_message_bytes=1024)
    with pytest.raises(RecordTooLarge, match="record 1 of the batch is 2000 bytes"):
        log.append(pa.table({"value": [b"a", b"x" * 2000]}))
    assert log.log_end_offset == 0


def test_compacted_topic_rejects_null_keys(make_log):
    log = make_log(cleanup_policy="compact")
    with pytest.raises(InvalidRecord, match="needs a key"):
        log.append(values_batch(0, 1))


def test_reads_outside_the_log_raise_offset_out_of_range(make_log):
    log = make_log()
    log.append(values_batch(0, 3))
    assert log.read(3).num_rows == 0
    with pytest.raises(OffsetOutOfRange, match=r"offset 4 is outside the log's range \[0, 3\]"):
        log.read(4)
    with pytest.raises(OffsetOutOfRange):
        log.read(-1)


def test_read_respects_max_records_and_max_bytes_but_returns_at_least_one(make_log):
    log = make_log()
    log.append(pa.table({"value": [b"x" * 1000] * 50}))
    assert log.read(10, max_records=7).column("offset").to_pylist() == list(range(10, 17))
    assert 1 <= log.read(0, max_records=50, max_bytes=5_000).num_rows <= 6
    assert log.read(0, max_records=50, max_bytes=1).num_rows == 1


def test_segment_rolls_on_bytes_and_seals_into_parquet(make_log):
    log = make_log(segment_bytes=64 * 1024)
    for start in range(0, 5000, 500):
        log.append(values_batch(start, 500))
    assert len(log.segment_bases()) > 1
    assert log.seal_pending() >= 1
    parquet = sorted(p.name for p in log.directory.glob("*.parquet"))
    assert parquet and parquet[0] == "00000000000000000000.parquet"
    assert len(list(log.directory.glob("*.wal"))) == 1  # only the active segment's
    assert log.read(0, 10_000).column("value").to_pylist() == [b"v%d" % i for i in range(5000)]


def test_segment_rolls_on_age(make_log, clock):
    log = make_log(segment_ms=1000)
    log.append(values_batch(0, 1))
    clock.advance(1000)
    log.append(values_batch(1, 1))
    assert log.segment_bases() == [0, 1]


def test_read_from_parquet_touches_row_groups_by_offset(make_log):
    log = make_log(segment_row_group_records=100)
    log.append(values_batch(0, 1000))
    log.roll()
    log.seal_pending()
    table = log.read(555, max_records=120)
    assert table.column("offset").to_pylist() == list(range(555, 675))
    assert table.column("value")[0].as_py() == b"v555"


def test_offset_for_time_finds_first_record_at_or_after(make_log, clock):
    log = make_log()
    t0 = clock.now_ms
    for i in range(4):  # batch i is stamped t0 + 100 * i
        log.append(values_batch(i * 10, 10))
        clock.advance(100)
    log.roll()
    log.seal_pending()
    log.append(values_batch(40, 10))
    assert log.offset_for_time(t0 - 1000) == 0
    assert log.offset_for_time(t0 + 150) == 20
    assert log.offset_for_time(clock.now_ms) == 40
    assert log.offset_for_time(clock.now_ms + 1) is None


@pytest.mark.parametrize("seal", [False, True])
def test_truncate_to_cuts_the_tail_and_appends_continue(make_log, seal):
    log = make_log(segment_bytes=4096)
    for start in range(0, 300, 30):
        log.append(values_batch(start, 30))
    if seal:
        log.seal_pending()
    log.truncate_to(95)
    assert log.log_end_offset == 95
    assert log.append(values_batch(1000, 1)) == (95, 95)
    values = log.read(0, 1000).column("value").to_pylist()
    assert values == [b"v%d" % i for i in range(95)] + [b"v1000"]


def test_truncate_outside_the_log_raises(make_log):
    log = make_log()
    log.append(values_batch(0, 3))
    with pytest.raises(OffsetOutOfRange):
        log.truncate_to(4)


def test_failed_wal_write_leaves_the_log_unchanged(make_log, monkeypatch):
    log = make_log()
    log.append(values_batch(0, 3))
    size = log.size_bytes

    def torn_writev(fd, buffers):  # half a frame reaches the file, then the disk fails
        os.write(fd, bytes(buffers[0]) + bytes(buffers[1])[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "writev", torn_writev)
    with pytest.raises(KafkaStorageError, match="append to .* failed: .*No space left"):
        log.append(values_batch(3, 3))
    monkeypatch.undo()
    assert (log.log_end_offset, log.size_bytes) == (3, size)
    assert log.append(values_batch(3, 1)) == (3, 3)
    log.close()
    reopened = make_log()
    assert reopened.read(0).column("value").to_pylist() == [b"v0", b"v1", b"v2", b"v3"]
    assert reopened.recovery.cut_tails == []


def test_flush_messages_fsyncs_on_count(make_log, monkeypatch):
    log = make_log(flush_messages=10)
    calls = []
    monkeypatch.setattr(log, "flush", lambda: calls.append(log.log_end_offset))
    log.append(values_batch(0, 4))
    log.append(values_batch(4, 6))
    assert calls == [10]


def test_config_accepts_kafka_names_and_rejects_unknown_keys():
    config = parse_config(LogConfig, {"segment.bytes": 2048, "retention_ms": 5})
    assert (config.segment_bytes, config.retention_ms) == (2048, 5)
    assert config.to_kafka_dict()["retention.ms"] == 5
    with pytest.raises(InvalidConfig, match="unknown config key 'retention.mss'"):
        parse_config(LogConfig, {"retention.mss": 1})
    with pytest.raises(InvalidConfig, match="segment.bytes"):
        parse_config(LogConfig, {"segment.bytes": -5})
    with pytest.raises(InvalidConfig, match="cleanup.policy"):
        parse_config(LogConfig, {"cleanup.policy": "forever"})


def test_reset_to_continues_an_empty_log_from_any_offset(make_log):
    log = make_log()
    log.append(values_batch(0, 5))
    log.reset_to(1_000)
    assert (log.log_start_offset, log.log_end_offset) == (1_000, 1_000)
    assert log.append(values_batch(0, 2)) == (1_000, 1_001)
    log.close()
    assert make_log().read(1_000).column("offset").to_pylist() == [1_000, 1_001]


def test_headers_count_toward_max_message_bytes(make_log):
    import pyarrow as pa

    from ray_broker.errors import RecordTooLarge
    from ray_broker.storage.schema import HEADER_TYPE

    log = make_log(max_message_bytes=1024)
    small = pa.array([[{"key": "h", "value": b"x" * 10}], None], HEADER_TYPE)
    log.append(pa.table({"value": [b"a", b"b"], "headers": small}))
    big = pa.array([None, [{"key": "h", "value": b"x" * 2000}]], HEADER_TYPE)
    with pytest.raises(RecordTooLarge, match="record 1"):
        log.append(pa.table({"value": [b"a", b"b"], "headers": big}))
    assert log.log_end_offset == 2
