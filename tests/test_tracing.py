"""Message tracing on a real broker: a traced record's trail in the trace topic — produced,
appended, committed, delivered, answered — for a consumer group, a redelivered and a
dead-lettered share-group record; untraced records leave no trail and no mark; the CLI prints
the trail or says "not traced"."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import ray
from typer.testing import CliRunner

from ray_broker.cli import app
from ray_broker.errors import InvalidConfig, InvalidRecord
from ray_broker.storage.schema import ATTR_TRACED


def new_topic(broker, **config) -> str:
    name = f"tr-{uuid.uuid4().hex[:8]}"
    broker.admin().create_topic(name, partitions=2, config=config or None)
    return name


def wait_for_trail(admin, topic, partition, offset, last_event, timeout_s=30.0) -> list:
    """The trail once its last step arrived (steps are shipped every ~100 ms)."""
    deadline = time.monotonic() + timeout_s
    events: list = []
    while time.monotonic() < deadline:
        events = admin.trace(topic, partition, offset)
        if events and events[-1].event == last_event:
            return events
        time.sleep(0.3)
    raise AssertionError(f"trail ends with {[e.event for e in events]}, not {last_event}")


def poll_one(consumer, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=300).values():
            if records:
                return records
    raise AssertionError("nothing delivered")


def test_a_traced_record_shows_its_trail_to_a_consumer_group(shared_broker):
    topic = new_topic(shared_broker)
    with shared_broker.producer() as producer:
        producer.send(topic, value=b"plain", partition=0).result()
        meta = producer.send(
            topic, value=b"order-1", partition=0, headers=[("trace.id", b"order-1")], trace=True
        ).result()
    group = f"g-{uuid.uuid4().hex[:6]}"
    consumer = shared_broker.consumer(topic, group_id=group, auto_offset_reset="earliest")
    records = []
    while len(records) < 2:
        records += poll_one(consumer)
    consumer.close()
    admin = shared_broker.admin()
    events = wait_for_trail(admin, topic, 0, meta.offset, "delivered")
    assert [e.event for e in events] == ["produced", "appended", "committed", "delivered"]
    assert all(e.trace_id == "order-1" and e.offset == meta.offset for e in events)
    assert events[0].time_ms == meta.timestamp  # produced: the record's own CreateTime
    assert events[2].details["in_sync"] and events[2].details["high_watermark"] > meta.offset
    assert group in events[3].details["consumer"]
    assert [e.event for e in admin.trace_by_id("order-1")] == [e.event for e in events]
    # The untraced neighbour has no trail and no mark in the log.
    assert admin.trace(topic, 0, meta.offset - 1) == []
    leader = shared_broker._metadata.topic(topic).leader(0)
    log = ray.get(leader.__ray_call__.remote(lambda a: a.core.log.read(0, 2)))
    flags = log.column("attributes").to_pylist()
    assert not (flags[0] or 0) & ATTR_TRACED and flags[1] & ATTR_TRACED


def test_a_released_then_accepted_share_record_shows_both_deliveries(shared_broker):
    topic = new_topic(shared_broker, **{"message.trace": "true"})  # every record traced
    with shared_broker.producer() as producer:
        meta = producer.send(topic, value=b"job", partition=1).result()
    consumer = shared_broker.share_consumer(
        topic,
        group_id="workers",
        auto_offset_reset="earliest",
        share_acknowledgement_mode="explicit",
    )
    [record] = poll_one(consumer)
    consumer.acknowledge(record, "release", error="busy")
    consumer.commit_sync()
    [again] = poll_one(consumer)
    assert again.delivery_count == 2
    consumer.acknowledge(again, "accept")
    consumer.commit_sync()
    consumer.close()
    events = wait_for_trail(shared_broker.admin(), topic, 1, meta.offset, "accepted")
    names = [e.event for e in events]
    assert names == [
        "produced",
        "appended",
        "committed",
        "delivered",
        "released",
        "delivered",
        "accepted",
    ]
    deliveries = [e for e in events if e.event == "delivered"]
    assert [e.details["delivery_count"] for e in deliveries] == [1, 2]
    assert all(e.details["group"] == "workers" and e.details["member"] for e in deliveries)
    assert events[4].details["error"] == "busy"


def test_a_rejected_share_record_shows_its_dead_letter_copy(shared_broker):
    topic = new_topic(shared_broker)
    with shared_broker.producer() as producer:
        meta = producer.send(topic, value=b"poison", partition=0, trace=True).result()
    consumer = shared_broker.share_consumer(
        topic, group_id="mail", auto_offset_reset="earliest", share_acknowledgement_mode="explicit"
    )
    [record] = poll_one(consumer)
    consumer.acknowledge(record, "reject", error="bad address")
    consumer.commit_sync()
    consumer.close()
    events = wait_for_trail(shared_broker.admin(), topic, 0, meta.offset, "dead_lettered")
    assert [e.event for e in events][-3:] == ["delivered", "rejected", "dead_lettered"]
    assert events[-1].details["dead_letter_topic"] == f"{topic}.mail.dlq"


def test_trace_answers_not_traced_and_refuses_bad_input(shared_broker):
    admin = shared_broker.admin()
    topic = new_topic(shared_broker)
    assert admin.trace(topic, 0, 123_456) == []  # no such record
    with pytest.raises(InvalidConfig):
        admin.trace(topic, -1, 0)
    with pytest.raises(InvalidConfig):
        admin.trace_by_id("")
    with shared_broker.producer() as producer, pytest.raises(InvalidRecord):
        producer.send(topic, value=b"x", trace="yes")


def test_the_trace_command_prints_the_trail_or_not_traced(shared_broker):
    topic = new_topic(shared_broker)
    with shared_broker.producer() as producer:
        meta = producer.send(topic, value=b"v", partition=1, trace=True).result()
    wait_for_trail(shared_broker.admin(), topic, 1, meta.offset, "committed")
    options = ["--namespace", shared_broker.namespace, "--data-dir", str(shared_broker.data_dir)]
    runner = CliRunner()
    found = runner.invoke(
        app, ["--output", "json", "trace", topic, "1", str(meta.offset), *options]
    )
    assert found.exit_code == 0, found.output
    assert [row["event"] for row in json.loads(found.output)][:3] == [
        "produced",
        "appended",
        "committed",
    ]
    table = runner.invoke(app, ["trace", topic, "1", str(meta.offset), *options])
    assert "appended" in table.output
    missing = runner.invoke(app, ["trace", topic, "0", "99", *options])
    assert missing.exit_code == 0 and "Not traced" in missing.output
    assert runner.invoke(app, ["trace", *options]).exit_code != 0  # neither place nor id


def test_a_delayed_traced_record_is_traced_where_it_is_delivered(shared_broker):
    topic = new_topic(shared_broker)
    with shared_broker.producer() as producer:
        producer.send(
            topic, value=b"later", headers=[("trace.id", b"late-1")], delay_ms=300, trace=True
        ).result()
    admin = shared_broker.admin()
    deadline, events = time.monotonic() + 60, []
    while time.monotonic() < deadline and "committed" not in [e.event for e in events]:
        events = admin.trace_by_id("late-1")
        time.sleep(0.3)
    assert [e.event for e in events][:3] == ["produced", "appended", "committed"]
    assert {e.topic for e in events} == {topic}  # not the schedule topic
