"""Sealed segments are plain Parquet in a Hive layout: other engines read a topic's history."""

from __future__ import annotations

import pyarrow.dataset as ds
import pytest

from ray_broker.storage import Log, LogConfig
from tests.storage.conftest import values_batch


@pytest.fixture
def sealed_topic(tmp_path):
    topic_dir = tmp_path / "orders"
    for partition in range(2):
        log = Log(topic_dir / f"partition={partition}", LogConfig(segment_bytes=8192))
        for start in range(0, 1000, 100):
            log.append(values_batch(start, 100, keys=True))
        log.roll()
        log.seal_pending()
        log.close()
    return topic_dir


def _broker_rows(topic_dir):
    rows = []
    for partition in range(2):
        log = Log(topic_dir / f"partition={partition}")
        for r in log.read(0, 10_000).to_pylist():
            rows.append((partition, r["offset"], r["key"], r["value"]))
    return sorted(rows)


def test_pyarrow_dataset_reads_the_same_rows(sealed_topic):
    dataset = ds.dataset(sealed_topic, format="parquet", partitioning="hive")
    table = dataset.to_table(columns=["partition", "offset", "key", "value"])
    rows = sorted(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))
    assert len(rows) == 2000
    assert rows == _broker_rows(sealed_topic)


def test_duckdb_reads_the_same_rows(sealed_topic):
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(
        f'SELECT partition, "offset", key, value FROM read_parquet('
        f"'{sealed_topic}/*/*.parquet', hive_partitioning = true)"
    ).fetchall()
    assert sorted((int(p), o, bytes(k), bytes(v)) for p, o, k, v in rows) == _broker_rows(
        sealed_topic
    )
