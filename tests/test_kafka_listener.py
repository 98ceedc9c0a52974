"""Real Kafka clients — kafka-python, confluent-kafka (librdkafka), aiokafka — against the
Kafka listener of a real broker on 127.0.0.1, and hostile bytes on its socket."""

from __future__ import annotations

import asyncio
import random
import struct
import threading
import time
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from ray_broker.structs import TopicPartition as NativeTP
from tests.kafka_helpers import closed, frame, listening_broker, raw_connection, read_answer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def kafka(_session_ray, tmp_path_factory):
    broker = listening_broker(
        tmp_path_factory.mktemp("kafka"), "kafka", {"auto.create.topics.enable": True}
    )
    yield broker
    broker.shutdown()


def new_topic(kafka, partitions: int = 1) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kafka.admin().create_topic(name, partitions)
    return name


def read_natively(kafka, topic: str, partitions: int, count: int) -> list:
    consumer = kafka.consumer(auto_offset_reset="earliest")
    consumer.assign([NativeTP(topic, p) for p in range(partitions)])
    records = []
    deadline = time.monotonic() + 30
    while len(records) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records += batch
    consumer.close()
    return records


def drain(consumer, count: int, timeout_s: float = 30) -> list:
    records = []
    deadline = time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records += batch
    return records


# --- kafka-python --------------------------------------------------------------------------------


def test_keyed_records_with_headers_are_the_same_records_over_kafka_and_natively(kafka):
    topic = new_topic(kafka, 3)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=5)
    sent = [
        (f"key-{i % 10}".encode(), f"value-{i}".encode(), [("n", str(i).encode()), ("e", b"")])
        for i in range(600)
    ]
    metas = [
        producer.send(topic, key=k, value=v, headers=h).get(timeout=30) for k, v, h in sent[:5]
    ]
    for k, v, h in sent[5:]:
        producer.send(topic, key=k, value=v, headers=h)
    producer.flush()
    producer.close()
    assert [m.offset for m in metas if m.partition == metas[0].partition][0] == 0

    native = read_natively(kafka, topic, 3, len(sent))
    assert sorted((r.key, r.value, list(r.headers)) for r in native) == sorted(
        (k, v, h) for k, v, h in sent
    )
    by_key = {}
    for r in native:  # murmur2 keyed partitioning, as Kafka's: one key, one partition
        by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(parts) == 1 for parts in by_key.values())
    for records in _per_partition(native).values():  # in send order per partition
        numbers = [int(dict(r.headers)["n"]) for r in records]
        assert numbers == sorted(numbers)

    native_producer = kafka.producer()
    for i in range(50):
        native_producer.send(topic, key=b"native", value=f"n-{i}".encode(), headers=[("h", b"1")])
    native_producer.flush()
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    consumer.assign([TopicPartition(topic, p) for p in range(3)])
    over_kafka = drain(consumer, len(sent) + 50)
    consumer.close()
    assert len(over_kafka) == len(sent) + 50
    assert sorted((r.partition, r.offset, r.key, r.value) for r in over_kafka) == sorted(
        (r.partition, r.offset, r.key, r.value) for r in read_natively(kafka, topic, 3, 650)
    )
    natives = [r for r in over_kafka if r.key == b"native"]
    assert [r.value for r in natives] == [f"n-{i}".encode() for i in range(50)]
    assert all(list(r.headers) == [("h", b"1")] for r in natives)


def _per_partition(records) -> dict[int, list]:
    grouped: dict[int, list] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        grouped.setdefault(r.partition, []).append(r)
    return grouped


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_every_compression_codec_round_trips(kafka, codec):
    topic = new_topic(kafka)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, compression_type=codec)
    for i in range(200):
        producer.send(topic, value=(f"{codec}-{i}-" + "x" * 50).encode())
    producer.flush()
    producer.close()
    values = [r.value for r in read_natively(kafka, topic, 1, 200)]
    assert values == [(f"{codec}-{i}-" + "x" * 50).encode() for i in range(200)]


def test_a_group_of_two_splits_the_partitions_and_commits(kafka):
    topic = new_topic(kafka, 4)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    for i in range(400):
        producer.send(topic, key=str(i).encode(), value=str(i).encode())
    producer.flush()
    producer.close()
    group = f"g-{uuid.uuid4().hex[:6]}"
    members = [
        KafkaConsumer(
            topic,
            bootstrap_servers=kafka.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        for _ in range(2)
    ]
    seen: list = []
    deadline = time.monotonic() + 60

    def consume(member) -> None:  # each member in its own thread, as applications run them
        while len(seen) < 400 and time.monotonic() < deadline:
            for records in member.poll(timeout_ms=1000).values():
                seen.extend(records)

    threads = [threading.Thread(target=consume, args=(m,)) for m in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assignments = [member.assignment() for member in members]
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    assert all(len(a) == 2 for a in assignments), (
        len(seen),
        time.monotonic() - deadline,
        admin.describe_groups([group]),
    )
    assert not assignments[0] & assignments[1]
    assert sorted(int(r.value) for r in seen) == list(range(400))
    for member in members:
        member.commit()
    committed = {tp.partition: members[0].committed(tp) for tp in assignments[0] | assignments[1]}
    for member in members:
        member.close()
    native = kafka.consumer(group_id=group, enable_auto_commit=False)
    for partition, offset in committed.items():
        assert native.committed(NativeTP(topic, partition)) == offset > 0
    native.close()
    assert sum(committed.values()) == 400


def test_seek_offsets_for_times_and_the_ends_of_a_partition(kafka):
    topic = new_topic(kafka)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    base = int(time.time() * 1000) - 100_000
    for i in range(100):
        producer.send(topic, value=str(i).encode(), timestamp_ms=base + i * 1000)
    producer.flush()
    producer.close()
    tp = TopicPartition(topic, 0)
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False)
    consumer.assign([tp])
    assert consumer.beginning_offsets([tp]) == {tp: 0}
    assert consumer.end_offsets([tp]) == {tp: 100}
    found = consumer.offsets_for_times({tp: base + 42_500})
    assert found[tp].offset == 43 and found[tp].timestamp == base + 43_000
    assert consumer.offsets_for_times({tp: base + 10**9})[tp] is None
    consumer.seek(tp, 90)
    assert [int(r.value) for r in drain(consumer, 10)] == list(range(90, 100))
    consumer.close()


def test_admin_creates_describes_and_deletes_topics(kafka):
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    name = f"admin-{uuid.uuid4().hex[:6]}"
    admin.create_topics([NewTopic(name, 2, 1, topic_configs={"retention.ms": "3600000"})])
    assert name in admin.list_topics()
    assert kafka.admin().describe_topic(name).config["retention.ms"] == 3_600_000
    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    modified = described["topic"][name]  # kafka-python shows what differs from the defaults
    assert modified["retention.ms"]["value"] == "3600000"
    assert "segment.bytes" not in modified
    from kafka.errors import TopicAlreadyExistsError

    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topics([NewTopic(name, 1, 1)])
    admin.delete_topics([name])
    assert name not in admin.list_topics()
    admin.close()


# --- confluent-kafka (librdkafka) and aiokafka ---------------------------------------------------


def test_librdkafka_idempotent_zstd_producer_and_consumer_group(kafka):
    from confluent_kafka import Consumer, Producer

    topic = new_topic(kafka, 2)
    producer = Producer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "enable.idempotence": True,
            "compression.type": "zstd",
            "linger.ms": 5,
        }
    )
    errors = []
    for i in range(2_000):
        producer.produce(
            topic,
            key=str(i % 13).encode(),
            value=f"v{i}".encode(),
            headers=[("i", str(i).encode())],
            on_delivery=lambda err, msg: errors.append(err) if err else None,
        )
    assert producer.flush(30) == 0 and not errors
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": f"rd-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < 2_000 and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            got.append(message)
    assert len(got) == 2_000
    assert sorted(m.value() for m in got) == sorted(f"v{i}".encode() for i in range(2_000))
    for partition in (0, 1):  # per key and partition, in send order
        numbers = [int(dict(m.headers())["i"]) for m in got if m.partition() == partition]
        assert numbers == sorted(numbers)
    consumer.commit(asynchronous=False)
    consumer.close()
    native = read_natively(kafka, topic, 2, 2_000)
    assert len(native) == 2_000  # the idempotent producer wrote each record once


def test_librdkafka_transactions_commit_and_abort_for_read_committed_readers(kafka):
    from confluent_kafka import Consumer, Producer

    topic = new_topic(kafka)
    producer = Producer(
        {"bootstrap.servers": kafka.bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex[:6]}"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(10):
        producer.produce(topic, value=f"kept-{i}".encode())
    producer.commit_transaction(30)
    producer.begin_transaction()
    for i in range(10):
        producer.produce(topic, value=f"dropped-{i}".encode())
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"last")
    producer.commit_transaction(30)

    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": f"rc-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    values = []
    deadline = time.monotonic() + 60
    while (not values or values[-1] != b"last") and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            values.append(message.value())
    consumer.close()
    assert values == [f"kept-{i}".encode() for i in range(10)] + [b"last"]


def test_aiokafka_lz4_round_trip(kafka):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = new_topic(kafka)

    async def scenario() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, compression_type="lz4")
        await producer.start()
        try:
            for i in range(300):
                await producer.send(topic, f"a{i}".encode(), key=b"k")
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        values: list[bytes] = []

        async def read() -> None:
            async for message in consumer:
                values.append(message.value)
                if len(values) == 300:
                    return

        try:
            await asyncio.wait_for(read(), 60)
        finally:
            await consumer.stop()
        return values

    assert asyncio.run(scenario()) == [f"a{i}".encode() for i in range(300)]


# --- hostile input -------------------------------------------------------------------------------


def still_serves(kafka) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    producer.send(new_topic(kafka), b"alive").get(timeout=30)
    producer.close()


def test_garbage_oversized_and_unknown_frames_close_only_their_connection(kafka):
    stalled = raw_connection(kafka)
    stalled.sendall(struct.pack(">i", 1000) + b"\x00" * 10)  # stops mid-frame
    for bad in (
        b"\xff\xff\xff\xff" + b"junk",  # negative length
        struct.pack(">i", 200 * 1024 * 1024),  # over socket.request.max.bytes
        frame(999, 0, 1, b""),  # no such API
        frame(0, 99, 1, b""),  # Produce v99
        frame(3, 8, 1, b"\x01\x02"),  # Metadata that does not decode
        struct.pack(">i", 3) + b"abc",  # too short for a header
    ):
        sock = raw_connection(kafka)
        sock.sendall(bad)
        assert closed(sock), bad[:12]
        sock.close()
    still_serves(kafka)  # while the stalled connection still waits for its frame
    stalled.close()


def test_an_unsupported_api_versions_request_is_answered_with_the_supported_range(kafka):
    sock = raw_connection(kafka)
    sock.sendall(frame(18, 77, 42, b""))
    answer = read_answer(sock)
    correlation_id, error = struct.unpack(">ih", answer[:6])
    assert (correlation_id, error) == (42, 35)  # UNSUPPORTED_VERSION, in ApiVersions v0
    (count,) = struct.unpack(">i", answer[6:10])
    keys = {struct.unpack(">hhh", answer[10 + 6 * i : 16 + 6 * i]) for i in range(count)}
    assert (0, 3, 8) in keys and (1, 4, 11) in keys and (18, 0, 3) in keys
    sock.close()


def test_a_batch_with_a_wrong_crc_is_refused_and_nothing_is_written(kafka):
    from kafka.protocol.producer import ProduceRequest
    from kafka.record.default_records import DefaultRecordBatchBuilder

    topic = new_topic(kafka)
    builder = DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, 2**20)
    builder.append(0, int(time.time() * 1000), None, b"never", [])
    batch = bytearray(builder.build())
    batch[-1] ^= 0x55
    request = ProduceRequest(
        version=7,
        transactional_id=None,
        acks=-1,
        timeout_ms=5000,
        topic_data=[
            ProduceRequest.TopicProduceData(
                name=topic,
                partition_data=[
                    ProduceRequest.TopicProduceData.PartitionProduceData(
                        index=0, records=bytes(batch)
                    )
                ],
            )
        ],
    )
    request.with_header(correlation_id=5, client_id="crc")
    sock = raw_connection(kafka)
    sock.sendall(bytes(request.encode(header=True, framed=True)))
    from kafka.protocol.producer import ProduceResponse

    answer = ProduceResponse.decode(read_answer(sock), version=7, header=True)
    assert answer.responses[0].partition_responses[0].error_code == 2  # CORRUPT_MESSAGE
    sock.close()
    assert kafka.admin().describe_topic(topic).partitions[0].high_watermark == 0
    still_serves(kafka)


def test_a_flood_of_connections_leaves_the_listener_serving(kafka):
    socks = [raw_connection(kafka) for _ in range(200)]
    still_serves(kafka)
    for sock in socks:
        sock.close()


def test_seeded_fuzz_of_malformed_frames(kafka):
    """Mutations of valid requests: every connection is answered or closed, none hangs the
    listener, and it keeps serving."""
    from kafka.protocol.metadata import ApiVersionsRequest, MetadataRequest

    seeds = []
    for request in (
        ApiVersionsRequest(version=3, client_software_name="f", client_software_version="1"),
        MetadataRequest(version=8, topics=None, allow_auto_topic_creation=False),
    ):
        request.with_header(correlation_id=1, client_id="fuzz")
        seeds.append(bytes(request.encode(header=True)))
    rng = random.Random(20261202)
    for _ in range(60):
        body = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        if rng.random() < 0.3:
            body = body[: rng.randrange(len(body))]
        sock = raw_connection(kafka)
        sock.settimeout(5)  # produce with acks=0 or a join barrier may rightly stay silent
        sock.sendall(struct.pack(">i", len(body)) + bytes(body))
        try:
            data = sock.recv(65536)  # an answer, or the close
        except (ConnectionResetError, TimeoutError):
            data = b""
        assert data is not None
        sock.close()
    (listener,) = kafka.kafka_listeners()
    assert listener["closed_for_errors"] > 0
    still_serves(kafka)


# --- Ray Data ------------------------------------------------------------------------------------


def test_ray_data_reads_and_writes_topics_over_the_kafka_protocol(kafka):
    import json

    import ray.data

    source = new_topic(kafka, 2)
    producer = kafka.producer()
    for i in range(300):
        producer.send(source, key=str(i).encode(), value=json.dumps({"n": i}).encode())
    producer.flush()
    rows = ray.data.read_kafka(source, bootstrap_servers=kafka.bootstrap).take_all()
    assert sorted(json.loads(row["value"])["n"] for row in rows) == list(range(300))

    sink = new_topic(kafka)
    ray.data.from_items([{"n": i} for i in range(100)]).write_kafka(sink, kafka.bootstrap)
    values = [json.loads(r.value) for r in read_natively(kafka, sink, 1, 100)]
    assert sorted(v["n"] for v in values) == list(range(100))


def test_a_crashed_listener_is_restarted_by_ray_and_clients_carry_on(kafka):
    """Ray restarts the listener's actor; it binds the same address again and a producer
    with default settings reconnects and delivers everything, once."""
    import ray

    from ray_broker.edge_actors import named
    from ray_broker.kafka.deploy import NAME_PREFIX

    topic = new_topic(kafka)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    for i in range(100):
        producer.send(topic, str(i).encode())
    producer.flush()
    (name,) = named(kafka.namespace, NAME_PREFIX)
    ray.kill(ray.get_actor(name, namespace=kafka.namespace), no_restart=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if kafka.kafka_listeners()[0]["port"] == int(kafka.bootstrap.rsplit(":", 1)[1]):
                break
        except Exception:  # restarting
            time.sleep(0.5)
    for i in range(100, 200):
        producer.send(topic, str(i).encode())
    producer.flush(timeout=60)
    producer.close()
    values = sorted(int(r.value) for r in read_natively(kafka, topic, 1, 200))
    assert values == list(range(200))
