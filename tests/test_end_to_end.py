"""Produce and consume through real partition actors on a real local Ray."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest

import ray_broker as rb
from ray_broker import TopicPartition, errors


@pytest.fixture
def broker(shared_broker):
    """The module's broker: its tests use topics of their own."""
    return shared_broker


def consume_all(consumer, expected: int, timeout_s: float = 30) -> list:
    records = []
    deadline = time.monotonic() + timeout_s
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500, max_records=10_000).values():
            records.extend(batch)
    return records


def test_round_trip_keeps_keys_headers_nulls_and_timestamps(broker, topic):
    producer = broker.producer()
    sent = [
        producer.send(topic, value=b"a", key=b"k1", headers=[("trace", b"t1")], partition=0),
        producer.send(topic, value=None, key=b"k2", partition=0),  # tombstone
        producer.send(topic, value=b"c", key=None, partition=0, timestamp_ms=1_234),
    ]
    metas = [f.result(timeout=30) for f in sent]
    assert [m.offset for m in metas] == [0, 1, 2]
    assert metas[2].timestamp == 1_234
    consumer = broker.consumer(topic, auto_offset_reset="earliest")
    records = sorted(consume_all(consumer, 3), key=lambda r: r.offset)
    assert [(r.key, r.value) for r in records] == [(b"k1", b"a"), (b"k2", None), (None, b"c")]
    assert records[0].headers == [("trace", b"t1")]
    assert records[1].headers == []
    assert records[2].timestamp == 1_234
    assert records[0].timestamp == metas[0].timestamp


def test_per_partition_order_and_same_key_same_partition(broker, topic):
    producer = broker.producer(linger_ms=1, batch_size=50)
    futures = [
        producer.send(topic, value=b"%d" % i, key=b"user-%d" % (i % 11)) for i in range(2_000)
    ]
    producer.flush(timeout=60)
    placed = [f.result() for f in futures]
    by_key: dict[bytes, set[int]] = {}
    for i, meta in enumerate(placed):
        by_key.setdefault(b"user-%d" % (i % 11), set()).add(meta.partition)
    assert all(len(parts) == 1 for parts in by_key.values())
    consumer = broker.consumer(topic, auto_offset_reset="earliest")
    records = consume_all(consumer, 2_000)
    assert len(records) == 2_000
    for partition in range(3):
        values = [int(r.value) for r in records if r.partition == partition]
        assert values == sorted(values)  # sends from one thread keep their order per partition
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == list(range(len(offsets)))


def test_send_batch_and_poll_arrow_move_whole_tables(broker, topic):
    producer = broker.producer()
    table = pa.table({"value": [b"x%d" % i for i in range(25_000)]})
    placed = producer.send_batch(topic, table).result(timeout=60)
    assert sum(p.last_offset - p.base_offset + 1 for p in placed) == 25_000
    assert len({p.partition for p in placed}) == 1  # no keys: the table stays together, in order
    consumer = broker.consumer(topic, auto_offset_reset="earliest")
    got = []
    deadline = time.monotonic() + 30
    while sum(t.num_rows for t in got) < 25_000 and time.monotonic() < deadline:
        got.append(consumer.poll_arrow(timeout_ms=500))
    result = pa.concat_tables(got)
    assert result.column_names[:2] == ["topic", "partition"]
    assert result.column("value").to_pylist() == table.column("value").to_pylist()


def test_send_batch_routes_rows_by_partition_column_and_by_key(broker, topic):
    producer = broker.producer()
    partitions = pa.array([2, 0, 2], pa.int32())
    by_column = pa.table({"value": [b"a", b"b", b"c"], "partition": partitions})
    placed = producer.send_batch(topic, by_column).result(timeout=30)
    counts = sorted((p.partition, p.last_offset - p.base_offset + 1) for p in placed)
    assert counts == [(0, 1), (2, 2)]
    keyed = pa.table({"value": [b"1", b"2"], "key": [b"same", b"same"]})
    placed = producer.send_batch(topic, keyed).result(timeout=30)
    single = producer.send(topic, b"3", key=b"same").result(timeout=30)
    assert [p.partition for p in placed] == [single.partition]


def test_long_poll_returns_as_soon_as_data_arrives(broker, topic):
    consumer = broker.consumer(topic, auto_offset_reset="latest", fetch_max_wait_ms=10_000)
    assert consumer.poll(timeout_ms=200) == {}
    producer = broker.producer(linger_ms=0)
    timer = threading.Timer(1.0, lambda: producer.send(topic, b"wake", partition=1))
    timer.start()
    started = time.monotonic()
    records = consumer.poll(timeout_ms=8_000)
    waited = time.monotonic() - started
    assert [r.value for rs in records.values() for r in rs] == [b"wake"]
    assert waited < 5  # the fetch waited for data, not for fetch_max_wait_ms
    timer.join()


def test_seek_position_and_offsets_for_times(broker, topic):
    producer = broker.producer()
    for i in range(10):
        producer.send(topic, b"%d" % i, partition=0, timestamp_ms=1_000 + i * 100)
    producer.flush(timeout=30)
    tp = TopicPartition(topic, 0)
    consumer = broker.consumer(auto_offset_reset="earliest")
    consumer.assign([tp])
    assert consumer.position(tp) == 0
    consumer.seek(tp, 7)
    assert [r.offset for r in consume_all(consumer, 3)] == [7, 8, 9]
    assert consumer.position(tp) == 10
    found = consumer.offsets_for_times({tp: 1_450, TopicPartition(topic, 1): 0})
    assert found[tp] == (5, 1_500)
    assert found[TopicPartition(topic, 1)] is None
    consumer.seek_to_beginning(tp)
    assert consumer.position(tp) == 0
    consumer.seek_to_end(tp)
    assert consumer.position(tp) == 10
    assert consumer.end_offsets([tp]) == {tp: 10}
    with pytest.raises(errors.OffsetOutOfRange, match=r"valid offsets are \[0, 10\]"):
        consumer.seek(tp, 11)


def test_auto_offset_reset_none_refuses_to_guess(broker, topic):
    consumer = broker.consumer(topic, auto_offset_reset="none")
    with pytest.raises(errors.OffsetOutOfRange, match="auto_offset_reset='none'"):
        consumer.poll(timeout_ms=100)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda a: a.create_topic("bad name!"), errors.InvalidTopicName),
        (lambda a: a.create_topic("x" * 250), errors.InvalidTopicName),
        (lambda a: a.create_topic("ok", partitions=0), errors.InvalidPartitions),
        (lambda a: a.create_topic("ok", partitions=-3), errors.InvalidPartitions),
        (lambda a: a.create_topic("ok", replication_factor=5), errors.InvalidReplicationFactor),
        (lambda a: a.create_topic("ok", config={"retention.mss": 1}), errors.InvalidConfig),
        (lambda a: a.create_topic("ok", config={"retention.ms": "soon"}), errors.InvalidConfig),
        (lambda a: a.describe_topic("missing"), errors.TopicNotFound),
        (lambda a: a.delete_topic("missing"), errors.TopicNotFound),
    ],
)
def test_bad_admin_requests_raise_typed_errors_in_the_caller(broker, call, error):
    admin = broker.admin()
    with pytest.raises(error) as info:
        call(admin)
    assert type(info.value).__module__ == "ray_broker.errors"  # not Ray's wrapper class
    assert "ok" not in admin.list_topics()  # nothing half-created


def test_bad_produce_requests_raise_typed_errors_and_the_broker_keeps_serving(broker, topic):
    producer = broker.producer()
    with pytest.raises(errors.TopicNotFound):
        producer.send("does-not-exist", b"x")
    with pytest.raises(errors.SerializationError, match="value_serializer"):
        producer.send(topic, "not bytes")
    with pytest.raises(errors.InvalidPartitions, match="0..2"):
        producer.send(topic, b"x", partition=3)
    with pytest.raises(errors.RecordTooLarge):
        producer.send(topic, b"x" * (1024 * 1024 + 1))
    with pytest.raises(errors.InvalidRecord):
        producer.send_batch(topic, pa.table({"nope": [1]}))
    with pytest.raises(errors.InvalidConfig, match="lingerms"):
        broker.producer(lingerms=5)
    assert producer.send(topic, b"fine", partition=0).result(timeout=30).offset == 0


def test_batch_rejected_by_the_partition_fails_its_future_and_later_sends_succeed(broker, topic):
    producer = broker.producer()
    with pytest.raises(errors.InvalidRecord, match="timestamp"):  # refused before queuing
        producer.send_batch(topic, pa.table({"value": [b"a"], "timestamp": ["not a time"]}))
    # A batch only the partition can judge: dated a day ahead (message.timestamp.after.max.ms).
    tomorrow = int(time.time() * 1000) + 86_400_000
    bad = producer.send_batch(topic, pa.table({"value": [b"a"], "timestamp": [tomorrow]}))
    with pytest.raises(errors.InvalidRecord, match="timestamp"):
        bad.result(timeout=30)
    good = producer.send_batch(topic, pa.table({"value": [b"b"]}))
    assert good.result(timeout=30)[0].base_offset == 0


def test_serializers_and_dotted_config_names(broker, topic):
    producer = broker.producer(**{"value.serializer": str.encode, "linger.ms": 0})
    producer.send(topic, "héllo", partition=0).result(timeout=30)
    consumer = broker.consumer(topic, auto_offset_reset="earliest", value_deserializer=bytes.decode)
    assert [r.value for r in consume_all(consumer, 1)] == ["héllo"]


def test_auto_create_topics_is_opt_in(ray_session, tmp_path):
    with rb.connect(
        data_dir=tmp_path, namespace="autocreate", config={"auto.create.topics.enable": True}
    ) as broker:
        try:
            assert broker.producer().send("fresh", b"x").result(timeout=30).offset == 0
            assert "fresh" in broker.admin().list_topics()
        finally:
            broker.shutdown()


def test_admin_create_partitions_alter_config_and_delete(broker, topic):
    admin = broker.admin()
    described = admin.create_partitions(topic, 5)
    assert len(described.partitions) == 5
    with pytest.raises(errors.InvalidPartitions, match="must be larger"):
        admin.create_partitions(topic, 2)
    altered = admin.alter_topic_config(topic, {"retention.ms": 60_000})
    assert altered.config["retention.ms"] == 60_000
    with pytest.raises(errors.InvalidConfig):
        admin.alter_topic_config(topic, {"retention.ms": -7})
    assert admin.describe_topic(topic).config["retention.ms"] == 60_000
    producer = broker.producer()
    assert producer.send(topic, b"x", partition=4).result(timeout=30).offset == 0
    admin.delete_topic(topic)
    assert topic not in admin.list_topics()
    assert not (broker.data_dir / topic).exists()
    admin.create_topic(topic, partitions=1)  # the name is free again, with an empty log
    assert admin.describe_topic(topic).partitions[0].log_end_offset == 0
