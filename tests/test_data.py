"""Topics as Ray Data datasets: a 1M-row round trip against a direct read of the segments, the
read's bounds, projection and filter over sealed files and the in-memory tail, and bad input."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest
import ray

import ray_broker as rb
from ray_broker import errors

ROWS = 250_000


def _collect(dataset) -> pa.Table:
    return pa.concat_tables(ray.get(dataset.to_arrow_refs()))


def _seal_everything(broker, topic: str, partitions: int) -> None:
    """Roll the active segments (segment.ms has passed) and write them to Parquet."""
    metadata = broker._metadata.topic(topic)
    ray.get([metadata.leader(p).maintain.remote() for p in range(partitions)])


def test_many_rows_round_trip_and_equal_a_direct_read_of_the_segments(broker) -> None:
    topic = f"data-{uuid.uuid4().hex[:6]}"
    broker.admin().create_topic(topic, partitions=4, config={"segment.ms": 500})
    ids = np.arange(ROWS, dtype=np.int64)
    values = pa.array([b"%08d" % i + b"x" * 92 for i in range(ROWS)], pa.binary())
    table = pa.table({"id": ids, "key": pc.cast(pa.array(ids), pa.string()), "value": values})
    source = ray.data.from_arrow([table.slice(i, ROWS // 4) for i in range(0, ROWS, ROWS // 4)])

    written = rb.write_topic(source, topic, key_column="key", namespace=broker.namespace)
    assert written == ROWS

    time.sleep(0.6)
    _seal_everything(broker, topic, 4)
    read = _collect(rb.read_topic(topic, namespace=broker.namespace))
    direct = pads.dataset(broker.data_dir / topic, format="parquet", partitioning="hive").to_table()

    assert read.num_rows == direct.num_rows == ROWS
    order = [("partition", "ascending"), ("offset", "ascending")]
    read, direct = read.sort_by(order), direct.sort_by(order)
    for column in ("offset", "key", "value", "timestamp"):
        assert read.column(column).equals(direct.column(column)), column
    assert read.column("partition").to_pylist() == [int(p) for p in direct.column("partition")]
    sent = sorted(int(v[:8]) for v in read.column("value").to_pylist())
    assert sent == list(range(ROWS)), "every row once"


def test_reads_honour_offsets_times_columns_and_filters_on_files_and_tail(broker) -> None:
    topic = f"data-{uuid.uuid4().hex[:6]}"
    broker.admin().create_topic(topic, partitions=2, config={"segment.ms": 200})
    producer = broker.producer()
    base_ms = int(time.time() * 1000) - 60_000
    for i in range(200):  # 100 per partition, a millisecond apart
        producer.send(topic, b"v%d" % i, partition=i % 2, timestamp_ms=base_ms + i)
    producer.flush()
    time.sleep(0.25)
    _seal_everything(broker, topic, 2)  # the first 200 records in Parquet
    for i in range(200, 220):  # and a tail in memory
        producer.send(topic, b"v%d" % i, partition=i % 2, timestamp_ms=base_ms + i)
    producer.flush()
    producer.close()
    ns = broker.namespace

    everything = _collect(rb.read_topic(topic, namespace=ns))
    assert everything.num_rows == 220

    bounded = _collect(rb.read_topic(topic, start={0: 95}, end=105, namespace=ns))
    got = sorted(zip(bounded["partition"].to_pylist(), bounded["offset"].to_pylist(), strict=True))
    assert got == [(0, o) for o in range(95, 105)] + [(1, o) for o in range(0, 105)]

    timed = _collect(
        rb.read_topic(topic, start_time=base_ms + 150, end_time=base_ms + 210, namespace=ns)
    )
    assert sorted(timed["value"].to_pylist()) == sorted(b"v%d" % i for i in range(150, 210))

    picked = _collect(
        rb.read_topic(
            topic,
            columns=["offset", "value"],
            filter=pc.field("offset") >= 98,
            namespace=ns,
        )
    )
    assert picked.column_names == ["offset", "value"]
    assert sorted(picked["offset"].to_pylist()) == sorted(
        [98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109] * 2
    )


def test_bad_reads_and_writes_get_typed_errors(broker) -> None:
    topic = f"data-{uuid.uuid4().hex[:6]}"
    broker.admin().create_topic(topic, partitions=1)
    ns = broker.namespace
    with pytest.raises(errors.TopicNotFound):
        rb.read_topic("no-such-topic", namespace=ns)
    with pytest.raises(errors.InvalidConfig, match="unknown column"):
        rb.read_topic(topic, columns=["nope"], namespace=ns)
    with pytest.raises(errors.InvalidConfig, match="not both"):
        rb.read_topic(topic, start=0, start_time=0, namespace=ns)
    with pytest.raises(errors.InvalidConfig, match="expression"):
        rb.read_topic(topic, filter="offset > 3", namespace=ns)
    with pytest.raises(errors.InvalidConfig, match="offset >= 0"):
        rb.read_topic(topic, start=-1, namespace=ns)
    no_value = ray.data.from_arrow(pa.table({"payload": [b"a"]}))
    with pytest.raises(errors.InvalidRecord, match="no column 'value'"):
        rb.write_topic(no_value, topic, namespace=ns)
    assert rb.read_topic(topic, namespace=ns).count() == 0


def test_tiered_segments_serve_consumers_read_topic_and_restarts(broker, tmp_path) -> None:
    topic = f"tiered-{uuid.uuid4().hex[:6]}"
    remote = tmp_path / "remote"
    config = {
        "segment.ms": 200,
        "remote.storage.enable": True,
        "remote.storage.uri": remote.as_uri(),
        "local.retention.ms": 0,  # every sealed, committed segment moves at once
    }
    broker.admin().create_topic(topic, partitions=1, config=config)
    producer = broker.producer()
    for i in range(300):
        producer.send(topic, b"v%d" % i)
    producer.flush()
    time.sleep(0.25)
    leader = broker._metadata.topic(topic).leader(0)
    report = ray.get(leader.maintain.remote())
    assert report["segments_tiered"] >= 1
    local = broker.data_dir / topic / "partition=0"
    assert list(local.glob("*.parquet")) == [], "tiered segments leave the local disk"
    assert list((remote / topic / "partition=0").rglob("*.parquet")), "and are in remote storage"

    def read_all() -> list[bytes]:
        consumer = broker.consumer(topic, auto_offset_reset="earliest")
        values: list[bytes] = []
        while len(values) < 300:
            batch = consumer.poll(timeout_ms=5_000)
            assert batch, "no records within 5 s"
            values += [r.value for records in batch.values() for r in records]
        consumer.close()
        return values

    expected = [b"v%d" % i for i in range(300)]
    assert read_all() == expected
    assert sorted(
        _collect(rb.read_topic(topic, namespace=broker.namespace))["offset"].to_pylist()
    ) == list(range(300))

    ray.kill(leader, no_restart=False)  # the actor restarts and rebuilds its log from both tiers
    deadline = time.monotonic() + 60
    while True:
        try:
            broker._metadata.forget(topic)
            assert read_all() == expected
            break
        except errors.BrokerError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)

    broker.admin().delete_topic(topic)
    assert not list((remote / topic).rglob("*.parquet")), "deleting the topic deletes remote copies"


def test_transaction_markers_never_show_up_in_a_dataset(broker) -> None:
    """Markers are hidden in the Parquet scan of sealed files and skipped in the tail fetch
    (where a fetch of markers alone returns no record yet moves the position on)."""
    topic = f"data-{uuid.uuid4().hex[:6]}"
    broker.admin().create_topic(topic, partitions=1, config={"segment.ms": 200})
    producer = broker.producer(transactional_id=f"data-{uuid.uuid4().hex[:6]}")
    producer.init_transactions()

    def transaction(values: list[bytes], commit: bool) -> None:
        producer.begin_transaction()
        for value in values:
            producer.send(topic, value)
        producer.commit_transaction() if commit else producer.abort_transaction()

    transaction([b"a", b"b"], commit=True)
    transaction([b"x"], commit=False)
    time.sleep(0.3)
    _seal_everything(broker, topic, 1)  # these two transactions and markers are in Parquet now
    transaction([b"c"], commit=True)  # in memory: the tail, ending in a marker
    transaction([b"d"], commit=True)
    read = _collect(rb.read_topic(topic, namespace=broker.namespace))
    # read_uncommitted semantics: the aborted record is there, no marker is.
    assert sorted(read.column("value").to_pylist()) == [b"a", b"b", b"c", b"d", b"x"]
    producer.close()
