"""Server-side filters on a real broker: plain, group and share consumers receive exactly the
matching records (from in-memory and Parquet segments alike), their positions and lag move past
the rest, and bad filters are refused with InvalidFilter while the partition keeps serving."""

from __future__ import annotations

import time
import uuid

import pyarrow.compute as pc
import pytest
import ray

from ray_broker.errors import InvalidFilter
from ray_broker.structs import TopicPartition

KINDS = (b"order", b"refund", b"view")
FILTER = "headers.type = 'order' AND key LIKE 'vip%'"


def _matches(i: int) -> bool:
    return KINDS[i % 3] == b"order" and i % 5 == 0


@pytest.fixture(scope="module")
def backlog(shared_broker) -> tuple[str, int]:
    """A two-partition topic of 6,600 records: most in sealed Parquet segments, the newest in
    memory."""
    topic = f"f-{uuid.uuid4().hex[:8]}"
    admin = shared_broker.admin()
    admin.create_topic(
        topic,
        partitions=2,
        config={"segment.bytes": 64 * 1024, "segment.row.group.records": 500},
    )
    _produce(shared_broker, topic, range(6_000))
    for partition in range(2):  # seal what rolled, so both segment kinds are read
        leader = shared_broker._metadata.topic(topic).leader(partition)
        ray.get(leader.maintain.remote())  # seals what rolled (one sealer at a time)
        assert ray.get(leader.read_plan.remote(0, 3_000))["files"]
    _produce(shared_broker, topic, range(6_000, 6_600))  # these stay in memory
    return topic, 6_600


def _produce(broker, topic: str, numbers: range) -> None:
    with broker.producer() as producer:
        for i in numbers:
            key = b"vip%d" % i if i % 5 == 0 else b"k%d" % i
            producer.send(
                topic, value=b"%d" % i, key=key, headers=[("type", KINDS[i % 3])], partition=i % 2
            )


def _drain(consumer, idle_polls: int = 4) -> list:
    seen, idle = [], 0
    while idle < idle_polls:
        batch = consumer.poll(timeout_ms=300)
        idle = 0 if batch else idle + 1
        seen.extend(r for records in batch.values() for r in records)
    return seen


def test_a_filtered_consumer_gets_exactly_the_matches_and_moves_past_the_rest(
    shared_broker, backlog
):
    topic, total = backlog
    consumer = shared_broker.consumer(topic, auto_offset_reset="earliest", filter=FILTER)
    got = _drain(consumer)
    values = sorted(int(r.value) for r in got)
    assert values == [i for i in range(total) if _matches(i)]
    for partition in range(2):  # past every record, matching or not
        assert consumer.position(TopicPartition(topic, partition)) == total // 2
    consumer.close()


def test_a_pyarrow_expression_filters_the_same(shared_broker, backlog):
    topic, total = backlog
    expression = (pc.field("headers.type") == b"order") & pc.starts_with(pc.field("key"), "vip")
    consumer = shared_broker.consumer(topic, auto_offset_reset="earliest", filter=expression)
    assert sorted(int(r.value) for r in _drain(consumer)) == [
        i for i in range(total) if _matches(i)
    ]
    consumer.close()


def test_a_filtered_group_commits_past_filtered_records_so_lag_is_zero(shared_broker, backlog):
    topic, total = backlog
    group = f"g-{uuid.uuid4().hex[:6]}"
    consumer = shared_broker.consumer(
        topic, group_id=group, auto_offset_reset="earliest", filter="headers.type = 'refund'"
    )
    got = _drain(consumer)
    assert len(got) == sum(1 for i in range(total) if i % 3 == 1)
    consumer.commit()
    lags = shared_broker.admin().describe_group(group).partitions
    assert {p.partition: p.lag for p in lags} == {0: 0, 1: 0}
    consumer.close()


def test_a_filtered_long_poll_waits_for_a_match_and_skips_the_rest(shared_broker):
    topic = f"f-{uuid.uuid4().hex[:8]}"
    shared_broker.admin().create_topic(topic, partitions=1)
    consumer = shared_broker.consumer(topic, auto_offset_reset="latest", filter="key = 'hit'")
    consumer.poll(timeout_ms=200)
    with shared_broker.producer(linger_ms=0) as producer:
        for i in range(50):
            producer.send(topic, value=b"%d" % i, key=b"miss").result()
        producer.send(topic, value=b"found", key=b"hit").result()
    deadline, got = time.monotonic() + 10, []
    while not got and time.monotonic() < deadline:
        got = [r for records in consumer.poll(timeout_ms=500).values() for r in records]
    assert [r.value for r in got] == [b"found"]
    assert consumer.position(TopicPartition(topic, 0)) == 51
    consumer.close()


def test_a_filtered_share_group_delivers_only_matches_and_finishes_the_rest(shared_broker, backlog):
    topic, total = backlog
    group = f"s-{uuid.uuid4().hex[:6]}"
    consumer = shared_broker.share_consumer(
        topic, group_id=group, auto_offset_reset="earliest", filter=FILTER
    )
    got = _drain(consumer)
    consumer.close()  # implicit acknowledgement accepts the last poll
    assert sorted(int(r.value) for r in got) == [i for i in range(total) if _matches(i)]
    described = shared_broker.admin().describe_share_group(group)
    assert all(p.lag == 0 and p.start_offset == total // 2 for p in described.partitions)


@pytest.mark.parametrize(
    "bad",
    ["headers.type = ", "timestamp > 'noon'", "colour = 'red'", pc.field("nope") == 1, 3.5],
)
def test_bad_filters_are_refused_before_any_fetch(shared_broker, backlog, bad):
    topic, _ = backlog
    with pytest.raises(InvalidFilter):
        shared_broker.consumer(topic, filter=bad)
    with pytest.raises(InvalidFilter):
        shared_broker.share_consumer(topic, group_id="bad-filter", filter=bad)


def test_a_caller_bypassing_the_client_gets_invalid_filter_and_the_partition_serves_on(
    shared_broker, backlog
):
    topic, _ = backlog
    leader = shared_broker._metadata.topic(topic).leader(0)
    for garbage in ("key = 'x'", pc.field("key") == b"x", {"filter": 1}):
        with pytest.raises(InvalidFilter):
            ray.get(leader.fetch.remote(0, 10, 1 << 20, 0, False, garbage))
    response = ray.get(leader.fetch.remote(0, 10, 1 << 20, 0, False, None))
    assert response.num_records == 10
