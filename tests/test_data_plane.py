"""The direct data plane against real partition actors: records travel over it by default,
the Ray fallback serves the same calls, a parked fetch answers at once, and bad connections
hurt only themselves."""

from __future__ import annotations

import socket
import time
import uuid

import pyarrow as pa
import pytest
import ray

from ray_broker import frames
from ray_broker.data_plane import DataPlane
from ray_broker.storage.ipc import to_ipc


@pytest.fixture
def broker(shared_broker):
    return shared_broker


def _topic(broker, partitions: int = 1) -> str:
    name = f"dp-{uuid.uuid4().hex[:8]}"
    broker.admin().create_topic(name, partitions=partitions)
    return name


def _leader(broker, topic: str):
    return broker._metadata.topic(topic).leader(0)


def _round_trip(broker, topic: str, count: int, **options) -> tuple[list[bytes], dict, dict]:
    producer = broker.producer(linger_ms=0, **options)
    for i in range(count):
        producer.send(topic, value=f"v{i}".encode(), partition=0).result(timeout=30)
    consumer = broker.consumer(topic, auto_offset_reset="earliest", **options)
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(got) < count and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            got.extend(r.value for r in records)
    sent_by = dict(producer._sender._transport.counts)
    fetched_by = dict(consumer._fetcher._transport.counts)
    producer.close()
    consumer.close()
    return got, sent_by, fetched_by


def test_records_travel_over_the_data_plane_by_default(broker):
    topic = _topic(broker)
    got, sent_by, fetched_by = _round_trip(broker, topic, 50)
    assert got == [f"v{i}".encode() for i in range(50)]
    assert sent_by["direct"] > 0 and fetched_by["direct"] > 0, (sent_by, fetched_by)


def test_the_ray_fallback_serves_produce_and_fetch(broker):
    topic = _topic(broker)
    got, sent_by, fetched_by = _round_trip(broker, topic, 20, **{"data.plane": "ray"})
    assert got == [f"v{i}".encode() for i in range(20)]
    assert sent_by["direct"] == 0 and fetched_by["direct"] == 0
    assert sent_by["ray"] >= 20 and fetched_by["ray"] > 0


def test_a_parked_fetch_answers_within_50_ms_of_an_append(broker):
    topic = _topic(broker)
    leader = _leader(broker, topic)
    endpoint = tuple(ray.get(leader.data_endpoint.remote()))
    plane = DataPlane.shared()
    fetch = frames.Fetch(0, 100, 1 << 20, 5_000, False)
    parked = plane.request(endpoint, "test", None, fetch)
    time.sleep(0.3)
    assert not parked.done(), "the fetch did not park at the log end"
    batch = pa.table({"value": pa.array([b"now"], pa.binary())})
    produced = plane.request(
        endpoint, "test-produce", None, frames.Produce(None, 0, 0, 1, False, False), to_ipc(batch)
    )
    result, _ = produced.result(timeout=10)
    acked = time.monotonic()
    answer, body = parked.result(timeout=10)
    answered = time.monotonic()
    assert isinstance(result, frames.Produced) and isinstance(answer, frames.Fetched)
    assert answer.num_records == 1 and len(body) > 0
    assert answered - acked < 0.05, f"answered {1000 * (answered - acked):.1f} ms after the append"


def _raw(endpoint) -> socket.socket:
    sock = socket.create_connection(endpoint, timeout=10)
    return sock


def _closed(sock: socket.socket, timeout_s: float = 5.0) -> bytes:
    """What the leader wrote before closing (b"" if nothing); fails if it never closes."""
    sock.settimeout(timeout_s)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_garbage_and_oversized_frames_close_only_their_own_connection(broker):
    topic = _topic(broker)
    leader = _leader(broker, topic)
    endpoint = tuple(ray.get(leader.data_endpoint.remote()))
    garbage = _raw(endpoint)
    garbage.sendall(
        frames.LENGTH.pack(12) + frames.HEADER_LENGTH.pack(4) + b"\xc1\xc1\xc1\xc1" + b"xxxx"
    )
    said = _closed(garbage)
    header, _ = frames.split(said[frames.LENGTH.size :])
    answer = frames.decode_answer(header)
    assert isinstance(answer.result, frames.Failed) and answer.result.error == "InvalidRequest"
    huge = _raw(endpoint)
    huge.sendall(frames.LENGTH.pack(frames.PRE_AUTH_FRAME_MAX + 1))  # and never the rest
    assert b"InvalidRequest" in _closed(huge)
    got, sent_by, _ = _round_trip(broker, topic, 5)
    assert len(got) == 5 and sent_by["direct"] > 0, "the leader stopped serving others"


def test_a_request_before_hello_is_refused_before_it_is_served(broker):
    topic = _topic(broker)
    endpoint = tuple(ray.get(_leader(broker, topic).data_endpoint.remote()))
    sock = _raw(endpoint)
    fetch = frames.Envelope(0, frames.NO_EPOCH, frames.Fetch(0, 10, 1000, 0, False))
    sock.sendall(b"".join(bytes(p) for p in frames.frame(fetch)))
    said = _closed(sock)
    header, _ = frames.split(said[frames.LENGTH.size :])
    assert "Hello" in frames.decode_answer(header).result.message
