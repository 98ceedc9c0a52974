"""Delayed delivery on a real broker: records appear in their topic when due — never early,
once, in due order per partition — across restarts of the scheduler and of the schedule
partition; bad delays get typed errors."""

from __future__ import annotations

import time
import uuid

import pytest
import ray

from ray_broker.config import DELAY_SCHEDULER_NAME, DELAY_TOPIC
from ray_broker.delay_index import DUE_HEADER
from ray_broker.errors import InvalidRecord

TOLERANCE_MS = 5_000  # generous: this checks correctness; the benchmark reports lateness


def new_topic(broker, partitions: int = 2) -> str:
    name = f"d-{uuid.uuid4().hex[:8]}"
    broker.admin().create_topic(name, partitions=partitions)
    return name


def reader(broker, topic: str):
    """A read_committed consumer, already polling (so arrival times are when records land)."""
    consumer = broker.consumer(
        topic, auto_offset_reset="earliest", isolation_level="read_committed"
    )
    consumer.poll(timeout_ms=100)
    return consumer


def collect(consumer, expected: int, timeout_s: float) -> list[tuple]:
    """(partition, value, due, arrival ms) of every record."""
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            now = time.time() * 1000
            for r in records:
                got.append((r.partition, r.value, int(dict(r.headers)[DUE_HEADER]), now))
    consumer.close()
    return got


@pytest.fixture(scope="module")
def scheduler(shared_broker):
    """The delay scheduler, started and serving (its first start is not what lateness and
    order measure): a warm-up record has gone through it to its topic. Waiting only for the
    schedule write let the tests begin while the scheduler was still starting, and its first
    read then took part of a backlog that was already due."""
    topic = new_topic(shared_broker, partitions=1)
    consumer = reader(shared_broker, topic)
    with shared_broker.producer() as producer:
        producer.send(topic, value=b"warm-up", delay_ms=1).result()
    assert [g[1] for g in collect(consumer, 1, timeout_s=120)] == [b"warm-up"]
    return ray.get_actor(DELAY_SCHEDULER_NAME, namespace=shared_broker.namespace)


def check_delivery(got: list[tuple], expected_values: set[bytes]) -> None:
    values = [g[1] for g in got]
    assert len(values) == len(set(values)), "a delayed record was delivered twice"
    assert set(values) == expected_values, "a delayed record was lost"
    assert all(arrival >= due for _, _, due, arrival in got), "delivered before its due time"
    late = [arrival - due for _, _, due, arrival in got]
    assert max(late) < TOLERANCE_MS, f"lateness up to {max(late):.0f} ms"
    for partition in {g[0] for g in got}:
        dues = [due for p, _, due, _ in got if p == partition]
        assert dues == sorted(dues), "not in due order within a partition"


def test_delayed_records_arrive_when_due_once_and_in_due_order(shared_broker, scheduler):
    topic = new_topic(shared_broker)
    consumer = reader(shared_broker, topic)
    before = int(time.time() * 1000)  # whole ms, as the producer stamps due times
    with shared_broker.producer() as producer:
        futures = [
            producer.send(
                topic, value=b"%d" % i, key=b"k%d" % (i % 7), delay_ms=500 + (i * 37) % 2000
            )
            for i in range(2_000)
        ]
        meta = futures[0].result()
    assert (meta.topic, meta.offset) == (topic, -1) and meta.timestamp >= before + 500
    got = collect(consumer, 2_000, timeout_s=60)
    check_delivery(got, {b"%d" % i for i in range(2_000)})


def test_deliver_at_and_immediate_and_bad_delays(shared_broker):
    topic = new_topic(shared_broker, partitions=1)
    with shared_broker.producer() as producer:
        now = int(time.time() * 1000)
        producer.send(topic, value=b"at", deliver_at=now + 800)
        past = producer.send(topic, value=b"past", deliver_at=now - 10_000).result()
        assert past.offset >= 0  # due already: sent as an ordinary record
        with pytest.raises(InvalidRecord):
            producer.send(topic, value=b"x", delay_ms=-1)
        with pytest.raises(InvalidRecord):
            producer.send(topic, value=b"x", delay_ms=10, deliver_at=now)
        with pytest.raises(InvalidRecord):
            producer.send(topic, value=b"x", delay_ms=366 * 86_400_000)  # > delay.max.ms
        with pytest.raises(InvalidRecord):
            producer.send(topic, value=b"x", deliver_at="tomorrow")
    consumer = shared_broker.consumer(topic, auto_offset_reset="earliest")
    values = []
    deadline = time.monotonic() + 30
    while len(values) < 2 and time.monotonic() < deadline:
        values += [r.value for rs in consumer.poll(timeout_ms=200).values() for r in rs]
    assert values == [b"past", b"at"]
    consumer.close()
    assert DELAY_TOPIC not in shared_broker.admin().list_topics()  # internal: not listed
    assert DELAY_TOPIC in shared_broker.admin().list_topics(include_internal=True)


def test_delayed_records_fire_once_across_scheduler_and_schedule_partition_restarts(
    shared_broker, scheduler
):
    topic = new_topic(shared_broker)
    consumer = reader(shared_broker, topic)
    count = 10_000
    with shared_broker.producer() as producer:
        for i in range(count):
            producer.send(
                topic, value=b"%d" % i, key=b"k%d" % (i % 11), delay_ms=1_000 + (i % 5_000)
            )
        producer.flush()
    time.sleep(1.5)  # some have fired
    ray.kill(scheduler, no_restart=False)
    time.sleep(1.0)
    schedule_leader = shared_broker.admin()._metadata.topic(DELAY_TOPIC).leader(0)
    ray.kill(schedule_leader, no_restart=False)
    got = collect(consumer, count, timeout_s=120)
    values = [g[1] for g in got]
    assert len(values) == len(set(values)), "a delayed record was delivered twice"
    assert set(values) == {b"%d" % i for i in range(count)}, "a delayed record was lost"
    assert all(arrival >= due for _, _, due, arrival in got), "delivered before its due time"
    described = ray.get(scheduler.describe.remote())
    assert described["pending"] == 0


def test_the_first_delayed_record_of_a_started_broker_is_on_time(broker):
    """As ``ray-broker start`` does: the scheduler starts with the broker, so the first delayed
    record does not pay its start-up (it arrived 2-11 s late when the first send started it)."""
    broker.start_delay_scheduler()
    topic = new_topic(broker, partitions=1)
    consumer = reader(broker, topic)
    with broker.producer() as producer:
        producer.send(topic, value=b"first", delay_ms=2_000).result()
    [(_, value, due, arrival)] = collect(consumer, 1, timeout_s=60)
    assert value == b"first" and due <= arrival < due + 500, f"{arrival - due:.0f} ms late"
