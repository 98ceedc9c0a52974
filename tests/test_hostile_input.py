"""Hostile and careless input, through the public API and by calling actor handles directly.

Each case gets a typed error from ``ray_broker.errors`` (never a hang, a raw Ray or Python
error, or a silent drop), and afterwards the broker still serves a produce/consume round trip
and restarts with every acknowledged record.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
import ray
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ray_broker as rb
from ray_broker import TopicPartition, errors
from ray_broker.config import validate_group_id, validate_topic_name


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory):
    """One broker for the tests here that neither restart nor lock it (each uses its own
    topics): a broker per test would cost the suite about a minute."""
    from tests.conftest import start_local_ray

    start_local_ray()
    connection = rb.connect(
        data_dir=tmp_path_factory.mktemp("hostile"), namespace=f"hostile-{uuid.uuid4().hex[:6]}"
    )
    yield connection
    connection.shutdown()


@pytest.fixture
def broker(shared_broker):
    return shared_broker


@pytest.fixture
def topic(shared_broker) -> str:
    """One partition: these tests aim at partition 0 (each partition is an actor to start)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    shared_broker.admin().create_topic(name, partitions=1)
    return name


def round_trip(broker, topic: str) -> None:
    """A record sent now is read back: the broker still serves."""
    value = uuid.uuid4().hex.encode()
    with broker.producer(linger_ms=0) as producer:
        meta = producer.send(topic, value=value, partition=0).result(timeout=60)
    consumer = broker.consumer(auto_offset_reset="earliest")
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, meta.offset)
    records = consumer.poll(timeout_ms=10_000).get(tp, [])
    consumer.close()
    assert records and records[0].value == value


def _leader(broker, topic: str, partition: int = 0):
    topic_id = broker.admin().describe_topic(topic).topic_id
    return ray.get_actor(
        f"ray_broker.partition.{topic_id}.{partition}.r0", namespace=broker.namespace
    )


# --- names and ids ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_string_is_a_valid_topic_or_group_name_or_a_typed_refusal(name: str) -> None:
    for validate, error in (
        (validate_topic_name, errors.InvalidTopicName),
        (validate_group_id, errors.InvalidGroupId),
    ):
        with contextlib.suppress(error):
            assert validate(name) == name


def test_group_ids_with_control_characters_are_refused_and_odd_ones_survive_a_restart(
    ray_session, tmp_path
) -> None:
    namespace = f"h{uuid.uuid4().hex[:6]}"
    broker = rb.connect(data_dir=tmp_path, namespace=namespace)
    broker.admin().create_topic("t", partitions=1)
    round_trip(broker, "t")
    with pytest.raises(errors.InvalidGroupId):
        broker.consumer("t", group_id="evil\x00group")
    with pytest.raises(errors.InvalidGroupId):  # and directly at the coordinator
        ray.get(broker._coordinator.commit.remote("evil\x00group", None, {("t", 0): (1, "")}))
    odd = 'g:1/ü "quoted" \\ back'
    consumer = broker.consumer(group_id=odd, enable_auto_commit=False)
    consumer.commit({TopicPartition("t", 0): 1})
    broker.shutdown()
    broker = rb.connect(data_dir=tmp_path, namespace=namespace)
    consumer = broker.consumer(group_id=odd, enable_auto_commit=False)
    assert consumer.committed(TopicPartition("t", 0)) == 1
    round_trip(broker, "t")
    broker.shutdown()


def test_internal_names_are_reserved_and_internal_state_is_not_a_topic(broker) -> None:
    admin = broker.admin()
    for name in ("__consumer_offsets", "__cluster_metadata", "__anything"):
        with pytest.raises(errors.InvalidTopicName, match="reserved"):
            admin.create_topic(name)
        with pytest.raises(errors.InvalidTopicName):
            admin.delete_topic(name)
    admin.create_topic("t", partitions=1)
    round_trip(broker, "t")
    internal = [p.name for p in broker.data_dir.iterdir() if p.name.startswith("__")]
    assert internal == ["__internal"]


def test_a_second_broker_on_the_same_data_dir_is_refused(ray_session, tmp_path) -> None:
    first = rb.connect(data_dir=tmp_path, namespace=f"a{uuid.uuid4().hex[:6]}")
    first.admin().create_topic("t", partitions=1)
    with pytest.raises(errors.DataDirInUse, match=first.namespace):
        rb.connect(data_dir=tmp_path, namespace=f"b{uuid.uuid4().hex[:6]}")
    round_trip(first, "t")
    namespace = first.namespace
    first.shutdown()
    again = rb.connect(data_dir=tmp_path, namespace=namespace)  # the lock went with it
    round_trip(again, "t")
    again.shutdown()


def test_each_namespace_gets_its_own_default_data_directory() -> None:
    from ray_broker.broker import default_data_dir

    assert default_data_dir("a") != default_data_dir("b")
    assert default_data_dir("a").name == "a"


def test_delete_topic_racing_metadata_calls_leaves_no_zombie(broker) -> None:
    admin = broker.admin()
    admin.create_topic("doomed", partitions=3)
    topic_id = admin.describe_topic("doomed").topic_id
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                broker._metadata.refresh("doomed")
                admin.describe_topic("doomed")
            except errors.BrokerError:
                pass

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    admin.delete_topic("doomed")
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    assert not [n for n in names if topic_id in n], "a deleted topic's actor came back"
    assert not (broker.data_dir / "doomed").exists()
    admin.create_topic("doomed", partitions=3)
    round_trip(broker, "doomed")


def test_a_foreign_directory_is_neither_adopted_nor_deleted(broker) -> None:
    precious = broker.data_dir / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    with pytest.raises(errors.KafkaStorageError, match="precious"):
        broker.admin().create_topic("precious")
    assert (precious / "notes.txt").read_text() == "mine"
    # A topic's own directory keeps foreign files put there later.
    broker.admin().create_topic("own", partitions=1)
    (broker.data_dir / "own" / "README.txt").write_text("keep")
    broker.admin().delete_topic("own")
    assert (broker.data_dir / "own" / "README.txt").read_text() == "keep"


# --- values the producer takes ------------------------------------------------------------------


BAD_SEND_ARGUMENTS = [
    {"timestamp_ms": "now"},
    {"timestamp_ms": 2**64},
    {"timestamp_ms": -5},
    {"timestamp_ms": True},
    {"headers": [("\ud800", b"v")]},
    {"headers": [("k", "not bytes")]},
    {"headers": "k=v"},
    {"partition": True},
    {"partition": -1},
    {"partition": 1.0},
]


def test_bad_send_arguments_are_refused_and_the_producer_goes_on(broker, topic) -> None:
    producer = broker.producer(linger_ms=0)
    for kwargs in BAD_SEND_ARGUMENTS:
        with pytest.raises(errors.BrokerError) as caught:
            producer.send(topic, value=b"v", **kwargs)
        assert not caught.value.retriable, kwargs
    assert producer.send(topic, value=b"ok", partition=0).result(timeout=60).offset == 0
    producer.close(timeout=60)


def test_headers_count_toward_max_message_bytes(broker) -> None:
    broker.admin().create_topic("small", partitions=1, config={"max.message.bytes": 1024})
    producer = broker.producer()
    with pytest.raises(errors.RecordTooLarge):
        producer.send("small", value=b"v", headers=[("h", b"x" * 5000)])
    producer.close()


def test_send_batch_is_validated_whole_before_anything_is_written(broker) -> None:
    broker.admin().create_topic("two", partitions=2)
    producer = broker.producer()
    table = pa.table({"value": [b"a", b"b", b"c"], "partition": pa.array([0, 0, 5], pa.int32())})
    with pytest.raises(errors.InvalidPartitions):
        producer.send_batch("two", table)
    with pytest.raises(errors.InvalidRecord):
        producer.send_batch("two", pa.table({"value": [b"a"], "timestamp": [-1000]}))
    with pytest.raises(errors.InvalidRecord):
        producer.send_batch("two", pa.table({"value": [b"a"], "key": [1.5]}))
    with pytest.raises(errors.InvalidRecord, match="broker's own"):
        producer.send_batch(
            "two", pa.table({"value": [b"a"], "sequence": pa.array([7], pa.int32())})
        )
    with pytest.raises(errors.InvalidRecord):
        producer.send_batch(
            "two", pa.table({"value": [b"a"], "partition": pa.array([None], pa.int32())})
        )
    producer.close()
    consumer = broker.consumer("two", auto_offset_reset="earliest")
    assert consumer.end_offsets([TopicPartition("two", 0), TopicPartition("two", 1)]) == {
        TopicPartition("two", 0): 0,
        TopicPartition("two", 1): 0,
    }
    consumer.close()


# --- consumer -------------------------------------------------------------------------------------


def test_a_deserializer_error_keeps_the_position_at_the_bad_record(broker) -> None:
    broker.admin().create_topic("json", partitions=1)
    with broker.producer() as producer:
        for value in (b"1", b"not a number", b"3", b"4"):
            producer.send("json", value=value)
    consumer = broker.consumer("json", auto_offset_reset="earliest", value_deserializer=int)
    tp = TopicPartition("json", 0)
    with pytest.raises(errors.SerializationError, match="offset 1"):
        for _ in range(20):
            consumer.poll(timeout_ms=2_000)
    assert consumer.position(tp) == 1
    consumer.seek(tp, 2)
    values = [r.value for r in consumer.poll(timeout_ms=5_000).get(tp, [])]
    assert values == [3, 4]
    consumer.close()


def test_seek_with_a_bad_offset_is_a_typed_error(broker, topic) -> None:
    consumer = broker.consumer(topic)
    for offset in (1.5, "5", None, True, -1):
        with pytest.raises((errors.OffsetOutOfRange, errors.InvalidConfig)):
            consumer.seek(TopicPartition(topic, 0), offset)
    consumer.close()


def test_commits_to_partitions_that_do_not_exist_are_refused(broker, topic) -> None:
    consumer = broker.consumer(group_id="g", enable_auto_commit=False)
    for partition in (-1, 99):
        with pytest.raises((errors.UnknownTopicOrPartition, errors.TopicNotFound)):
            consumer.commit({TopicPartition(topic, partition): 0})
    consumer.close()


# --- direct actor calls ---------------------------------------------------------------------------


def test_only_the_controller_may_change_roles_and_epochs(broker, topic) -> None:
    leader = _leader(broker, topic)
    for call in (
        lambda: leader.epoch_state.remote(2**62),
        lambda: leader.become_follower.remote(2**62),
        lambda: leader.truncate.remote(2**62, 0, 0),
        lambda: leader.replicate.remote(2**62, None, [], 0),
    ):
        with pytest.raises(errors.Unauthorized):
            ray.get(call(), timeout=30)
    assert ray.get(leader.info.remote(), timeout=30)["role"] == "leader"
    round_trip(broker, topic)


def test_direct_produce_calls_with_bad_arguments_get_typed_errors(broker, topic) -> None:
    leader = _leader(broker, topic)
    value = pa.table({"value": [b"v"]})
    for args in (
        ("not a table", None, 0, 0, 1),
        (value, None, 0, 0, "all"),  # used to be taken as acks=1
        (value, "pid", 0, 0, 1),
        (value, 1, 40_000, 0, 1),
        (value, 1, 0, -3, 1),
    ):
        with pytest.raises(errors.BrokerError):
            ray.get(leader.produce.remote(*args), timeout=30)
    assert ray.get(leader.offsets.remote(), timeout=30).log_end_offset == 0  # nothing written
    round_trip(broker, topic)


def test_oversized_fetches_are_capped_by_the_broker(broker, topic) -> None:
    with broker.producer() as producer:
        producer.send_batch(
            topic,
            pa.table(
                {"value": [b"x" * 1000] * 5000, "partition": pa.array([0] * 5000, pa.int32())}
            ),
        )
    leader = _leader(broker, topic)
    response = ray.get(leader.fetch.remote(0, 10**9, 10**12), timeout=60)
    assert response.num_records <= 5000
    with pytest.raises(errors.InvalidConfig):
        broker.consumer(topic, max_partition_fetch_bytes=10**12)


def test_a_bad_session_timeout_does_not_stop_session_expiry(broker, topic) -> None:
    coordinator = broker._coordinator
    with pytest.raises(errors.InvalidConfig):
        ray.get(coordinator.join.remote("g", None, None, "c", [topic], None, "range", "x"))
    with pytest.raises(errors.InvalidConfig):
        ray.get(coordinator.join.remote("g", None, None, "c", [topic], None, "bogus", 10_000))
    member = broker.consumer(
        topic, group_id="g2", session_timeout_ms=1_000, heartbeat_interval_ms=300
    )
    member.poll(timeout_ms=1_000)
    member._membership.close(leave=False)  # vanish without leaving: the session must expire
    import time

    def members() -> list:
        try:
            return broker.admin().describe_group("g2").members
        except errors.GroupNotFound:  # expired and, with no offsets, forgotten
            return []

    deadline = time.monotonic() + 30
    while members() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not members()


def test_data_files_are_private_to_the_broker(ray_session, tmp_path) -> None:
    own = rb.connect(data_dir=tmp_path, namespace=f"p{uuid.uuid4().hex[:6]}")
    own.admin().create_topic("t", partitions=1)
    round_trip(own, "t")
    own.shutdown()
    paths = list(Path(tmp_path).rglob("*"))
    assert len(paths) > 5
    for path in paths:
        mode = path.stat().st_mode & 0o777
        assert mode & 0o077 == 0, f"{path} is readable by others: {oct(mode)}"


LISTENERS_SCRIPT = """
import json, sys, tempfile
import ray  # the application imported Ray first
import psutil
import ray_broker as rb

broker = rb.connect(data_dir=tempfile.mkdtemp(), namespace="bind-check")
me = psutil.Process()
found = []
for process in [me, *me.children(recursive=True)]:
    try:
        for conn in process.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                found.append(conn.laddr.ip)
    except psutil.Error:
        pass
broker.shutdown()
broker.close()
print(json.dumps(found))
"""


def test_connect_listens_on_loopback_only_even_when_ray_was_imported_first(tmp_path) -> None:
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env["RAY_BROKER_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", LISTENERS_SCRIPT],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=True,
    )
    addresses = json.loads(done.stdout.strip().splitlines()[-1])
    assert addresses, "found no listening sockets at all: the check itself is broken"
    outside = [a for a in addresses if a not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]
    assert not outside, f"Ray listens beyond loopback: {sorted(set(outside))}"


@pytest.mark.parametrize("name", ["abc\n", "abc\r", "\nabc", "a\nb"])
def test_a_topic_name_with_a_newline_is_refused(name: str) -> None:
    with pytest.raises(errors.InvalidTopicName):
        validate_topic_name(name)


def test_a_bad_transactional_id_is_refused_by_the_coordinator(shared_broker) -> None:
    producer = shared_broker.producer(transactional_id="order-app\n")
    try:
        with pytest.raises(errors.InvalidTransactionalId):
            producer.init_transactions()
    finally:
        producer.close()
