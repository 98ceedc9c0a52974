"""Ray's failures become typed, retriable-or-not ``BrokerError``s in one place (``_ray.py``),
and no client thread dies of one: each case is produced with real Ray, not constructed."""

from __future__ import annotations

import pickle
import time

import pytest
import ray

from ray_broker import errors
from ray_broker._ray import call, classify, resolve, retrying, submit


@ray.remote
class Holder:
    def put(self) -> list:
        return [ray.put(b"x" * 200_000)]  # owned by this actor's process

    def fail(self) -> None:
        raise errors.TopicNotFound("no such topic")

    def boom(self) -> None:
        raise ZeroDivisionError("a bug")

    def ping(self) -> str:
        return "pong"


def test_a_reply_whose_owner_died_is_retriable(ray_session) -> None:
    holder = Holder.remote()
    [inner] = ray.get(holder.put.remote())
    ray.kill(holder)
    with pytest.raises(errors.PartitionUnavailable) as caught:
        for _ in range(60):  # ray.kill is asynchronous: until the owner is gone, get succeeds
            resolve(inner, timeout_s=30)
            time.sleep(0.5)
    assert caught.value.retriable and "lost" in str(caught.value)


def test_calls_to_a_dead_actor_are_retriable(ray_session) -> None:
    holder = Holder.remote()
    assert call(holder.ping, timeout_s=30) == "pong"
    ray.kill(holder)
    with pytest.raises(errors.PartitionUnavailable) as caught:
        for _ in range(60):  # ray.kill is asynchronous: a call may still land before it acts
            call(holder.ping, timeout_s=30, unavailable=errors.PartitionUnavailable)
            time.sleep(0.5)
    assert caught.value.retriable
    with pytest.raises(errors.BrokerNotRunning):
        resolve(
            submit(holder.ping, unavailable=errors.BrokerNotRunning), 30, errors.BrokerNotRunning
        )


def test_an_actors_own_error_comes_back_unwrapped_and_a_bug_is_not_retriable(ray_session) -> None:
    holder = Holder.remote()
    with pytest.raises(errors.TopicNotFound):
        call(holder.fail, timeout_s=30)
    with pytest.raises(errors.BrokerError) as caught:
        call(holder.boom, timeout_s=30)
    assert not caught.value.retriable and "ZeroDivisionError" in str(caught.value)
    ray.kill(holder)


def test_submission_failures_are_typed() -> None:
    # What ``.remote()`` raises while a node is being removed: a plain Exception.
    error = classify(Exception("Failed to submit task to actor: Can't find actor"))
    assert isinstance(error, errors.PartitionUnavailable) and error.retriable
    assert not classify(TypeError("bad arguments")).retriable
    assert isinstance(classify(ray.exceptions.GetTimeoutError("slow")), errors.BrokerTimeoutError)
    assert pickle.loads(pickle.dumps(error)).retriable


def test_retrying_stops_at_the_deadline_and_on_non_retriable_errors() -> None:
    clock = [0.0]
    attempts = []

    def flaky() -> str:
        attempts.append(clock[0])
        raise errors.PartitionUnavailable("down")

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    with pytest.raises(errors.PartitionUnavailable):
        retrying(flaky, 1.0, 0.1, sleep=sleep, clock=lambda: clock[0])
    assert 3 <= len(attempts) <= 6 and clock[0] <= 1.0

    def wrong() -> str:
        attempts.append(-1)
        raise errors.InvalidConfig("no")

    attempts.clear()
    with pytest.raises(errors.InvalidConfig):
        retrying(wrong, 10.0, 0.1, sleep=sleep, clock=lambda: clock[0])
    assert attempts == [-1]


def test_a_batch_that_cannot_be_built_fails_alone_and_the_sender_goes_on(
    broker, topic, monkeypatch
) -> None:
    """send() refuses what it can see is wrong; whatever still breaks while a batch is built
    (injected here) fails that batch's futures only — the sender thread lives on."""
    from ray_broker.producer.batch import PendingRecords

    producer = broker.producer(linger_ms=0)
    with pytest.raises(errors.InvalidRecord):
        producer.send(topic, value=b"v", headers=[("\ud800", b"x")])
    with pytest.raises(errors.InvalidRecord):
        producer.send(topic, value=b"v", timestamp_ms="now")
    build = PendingRecords.build_table

    def broken_for_partition_0(self):
        if self.partitions and self.partitions[0] == 0:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return build(self)

    monkeypatch.setattr(PendingRecords, "build_table", broken_for_partition_0)
    bad = producer.send(topic, value=b"v", partition=0)
    with pytest.raises(errors.BrokerError) as caught:
        bad.result(timeout=30)
    assert not caught.value.retriable and "UnicodeEncodeError" in str(caught.value)
    good = producer.send(topic, value=b"after", partition=1).result(timeout=30)
    assert good.offset == 0
    monkeypatch.setattr(PendingRecords, "build_table", build)
    assert producer.send(topic, value=b"again", partition=0).result(timeout=30).offset == 0
    producer.close(timeout=30)
