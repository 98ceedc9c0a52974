"""Retention by time and size, and compaction, driven by a fake clock."""

from __future__ import annotations

import pyarrow as pa

from tests.storage.conftest import values_batch

HOUR_MS = 3_600_000


def _sealed_segments(log, clock, count, per_segment=100, step_ms=HOUR_MS):
    for i in range(count):
        log.append(values_batch(i * per_segment, per_segment))
        log.roll()
        clock.advance(step_ms)
    log.seal_pending()


def test_default_retention_is_three_days(make_log, clock):
    log = make_log()
    assert log.config.retention_ms == 3 * 24 * HOUR_MS
    _sealed_segments(log, clock, 3)
    clock.advance(3 * 24 * HOUR_MS - 3 * HOUR_MS)  # the oldest record is exactly 3 days old
    assert log.apply_retention() == []
    clock.advance(1)
    assert log.apply_retention() == [0]
    assert log.log_start_offset == 100


def test_retention_ms_deletes_oldest_whole_segments_only(make_log, clock):
    log = make_log(retention_ms=2 * HOUR_MS)
    _sealed_segments(log, clock, 4)
    log.append(values_batch(400, 10))
    deleted = log.apply_retention()
    assert deleted == [0, 100]
    assert log.log_start_offset == 200
    assert log.log_end_offset == 410
    assert sorted(p.name[:20] for p in log.directory.glob("*.parquet")) == [
        f"{200:020d}",
        f"{300:020d}",
    ]
    assert log.read(200, 1000).column("offset")[0].as_py() == 200


def test_retention_never_deletes_the_active_segment(make_log, clock):
    log = make_log(retention_ms=1)
    log.append(values_batch(0, 10))
    clock.advance(10 * HOUR_MS)
    assert log.apply_retention() == []
    assert log.read(0).num_rows == 10


def test_retention_bytes_keeps_the_log_under_the_limit(make_log, clock):
    log = make_log(retention_ms=-1)
    _sealed_segments(log, clock, 5)
    one_segment = log.size_bytes // 5
    limit = one_segment * 3
    log.config = log.config.model_copy(update={"retention_bytes": limit})
    deleted = log.apply_retention()
    assert deleted and deleted[0] == 0
    # Kafka's rule: delete the oldest while the rest would still be >= the limit.
    assert log.size_bytes - log._sealed[0].size_bytes < limit
    assert log.log_start_offset == deleted[-1] + 100


def test_compaction_keeps_newest_value_per_key(make_log, clock):
    log = make_log(cleanup_policy="compact")
    for round_ in range(3):
        log.append(pa.table({"key": [b"a", b"b", b"c"], "value": [b"%d" % round_] * 3}))
        log.roll()
    log.append(pa.table({"key": [b"a"], "value": [b"active"]}))
    log.seal_pending()
    removed = log.compact()
    assert removed == 6
    table = log.read(0, 100)
    assert table.column("offset").to_pylist() == [6, 7, 8, 9]
    assert table.column("value").to_pylist() == [b"2", b"2", b"2", b"active"]
    # Offsets are kept: reading at a compacted-away offset returns the next survivor.
    assert log.read(1, 1).column("offset").to_pylist() == [6]
    assert log.log_start_offset == 0 and log.log_end_offset == 10


def test_compaction_drops_tombstones_after_delete_retention(make_log, clock):
    log = make_log(cleanup_policy="compact", delete_retention_ms=HOUR_MS)
    log.append(pa.table({"key": [b"a", b"b"], "value": [b"1", b"1"]}))
    log.append(pa.table({"key": [b"a"], "value": pa.array([None], pa.binary())}))
    log.roll()
    log.seal_pending()
    log.compact()
    assert log.read(0, 10).column("value").to_pylist() == [b"1", None]
    clock.advance(HOUR_MS + 1)
    log.compact()
    assert log.read(0, 10).column("key").to_pylist() == [b"b"]


def test_compacted_log_survives_reopen(make_log, clock):
    log = make_log(cleanup_policy="compact")
    for round_ in range(2):
        log.append(pa.table({"key": [b"a", b"b"], "value": [b"%d" % round_] * 2}))
        log.roll()
    log.seal_pending()
    log.compact()
    log.close()
    reopened = make_log(cleanup_policy="compact")
    assert reopened.read(0, 10).column("offset").to_pylist() == [2, 3]
    assert reopened.log_end_offset == 4
