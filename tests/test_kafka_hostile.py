"""Hostile input at the Kafka listener's edge: what one request or one stranger may cost it.

One secured broker with one listener serves the whole module; memory findings are asserted on
the listener process's RSS with generous bounds (the old code grew it by gigabytes).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
import uuid

import psutil
import pytest
import ray
from kafka import KafkaProducer

from ray_broker.kafka.deploy import NAME_PREFIX
from ray_broker.kafka.listener import MAX_PENDING_CONNECTIONS
from ray_broker.kafka.protocol import build
from tests.kafka_helpers import closed, listening_broker, read_answer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MIB = 2**20


@pytest.fixture(scope="module")
def secured(_session_ray, tmp_path_factory):
    broker = listening_broker(
        tmp_path_factory.mktemp("kafka-hostile"),
        "kafka-hostile",
        {"security.enabled": True},
        username="root",
        password="root-pw",
    )
    yield broker
    broker.shutdown()


def _listener(broker):
    [name] = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == broker.namespace and a["name"].startswith(NAME_PREFIX)
    ]
    return ray.get_actor(name, namespace=broker.namespace)


def _listener_rss_mib(broker) -> float:
    pid = ray.get(_listener(broker).__ray_call__.remote(lambda actor: os.getpid()))
    return psutil.Process(pid).memory_info().rss / MIB


def _connect(broker) -> socket.socket:
    host, port = broker.bootstrap.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _sasl_plain(broker, user: str = "root", password: str = "root-pw") -> dict:
    return {
        "bootstrap_servers": broker.bootstrap,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": user,
        "sasl_plain_password": password,
    }


def test_a_huge_frame_before_login_is_refused_by_its_length_alone(secured):
    before = _listener_rss_mib(secured)
    strangers = [_connect(secured) for _ in range(4)]
    for sock in strangers:
        sock.sendall(struct.pack(">i", 99 * MIB) + b"\0" * 65_536)
    for sock in strangers:
        sock.settimeout(5)
        assert closed(sock), "the listener waited for the rest of a 99 MiB frame"
        sock.close()
    assert _listener_rss_mib(secured) - before < 100


def test_idle_strangers_make_room_for_a_real_client(secured):
    strangers = [_connect(secured) for _ in range(MAX_PENDING_CONNECTIONS + 36)]
    time.sleep(1)
    oldest = strangers[:36]
    for sock in oldest:
        sock.settimeout(5)
    assert all(closed(sock) for sock in oldest), "the oldest idle strangers were not evicted"
    topic = f"h-{uuid.uuid4().hex[:6]}"
    secured.admin().create_topic(topic, 1)
    producer = KafkaProducer(**_sasl_plain(secured))  # logs in while strangers hold slots
    assert producer.send(topic, b"real client").get(timeout=30).offset == 0
    producer.close()
    described = ray.get(_listener(secured).describe.remote())
    assert described["evicted_before_login"] >= 36 and described["serving"]
    for sock in strangers:
        sock.close()


def _fetch_frame(topic: str, copies: int, max_bytes: int) -> bytes:
    from kafka.protocol import consumer

    request = build(
        consumer.FetchRequest,
        {
            "replica_id": -1,
            "max_wait_ms": 0,
            "min_bytes": 0,
            "max_bytes": max_bytes,
            "isolation_level": 0,
            "session_id": 0,
            "session_epoch": -1,
            "topics": [
                {
                    "topic": topic,
                    "partitions": [
                        {
                            "partition": 0,
                            "current_leader_epoch": -1,
                            "fetch_offset": 0,
                            "log_start_offset": -1,
                            "partition_max_bytes": 2**31 - 1,
                        }
                    ]
                    * copies,
                }
            ],
            "forgotten_topics_data": [],
            "rack_id": "",
        },
        11,
    )
    request.with_header(correlation_id=7, client_id="hostile")
    return bytes(request.encode(header=True, framed=True))


def _login(sock: socket.socket, user: str = "root", password: str = "root-pw") -> None:
    """SASL PLAIN over a raw socket (handshake v1, authenticate v0)."""

    def call(api_key: int, version: int, body: bytes) -> bytes:
        header = struct.pack(">hhih", api_key, version, 1, 4) + b"test"
        sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        return read_answer(sock)

    mechanism = b"PLAIN"
    assert call(17, 1, struct.pack(">h", len(mechanism)) + mechanism)[4:6] == b"\0\0"
    token = b"\0" + user.encode() + b"\0" + password.encode()
    answer = call(36, 0, struct.pack(">i", len(token)) + token)
    assert answer[4:6] == b"\0\0", "login failed"


def test_a_fetch_listing_one_partition_150_times_answers_within_max_bytes(secured):
    topic = f"h-{uuid.uuid4().hex[:6]}"
    secured.admin().create_topic(topic, 1)
    with secured.producer() as producer:
        for _ in range(30):
            producer.send(topic, value=b"x" * 64 * 1024)
    before = _listener_rss_mib(secured)
    sock = _connect(secured)
    sock.settimeout(30)
    _login(sock)
    sock.sendall(_fetch_frame(topic, copies=150, max_bytes=1024))
    answer = read_answer(sock)
    sock.close()
    # At least one record (Kafka's rule for a budget smaller than a record), then stop: the
    # old listener answered 150 × 30 records (288 MiB) here.
    assert 64 * 1024 < len(answer) < 512 * 1024
    assert _listener_rss_mib(secured) - before < 200


def test_the_listener_has_no_stop_that_any_driver_could_call(secured):
    listener = _listener(secured)
    with pytest.raises(AttributeError):
        listener.stop.remote()
    described = ray.get(listener.describe.remote())
    assert described["serving"]


def _metadata_frame(topic: str) -> bytes:
    from kafka.protocol import metadata

    request = build(metadata.MetadataRequest, {"topics": [{"name": topic}]}, 1)
    request.with_header(correlation_id=9, client_id="hostile")
    return bytes(request.encode(header=True, framed=True))


def test_a_connection_of_a_deleted_user_is_closed(secured):
    topic = f"h-{uuid.uuid4().hex[:6]}"
    admin = secured.admin()
    admin.create_topic(topic, 1)
    admin.create_user("carol", "carol-pw")
    sock = _connect(secured)
    sock.settimeout(10)
    _login(sock, "carol", "carol-pw")
    sock.sendall(_metadata_frame(topic))
    assert read_answer(sock)  # logged in: answered
    admin.delete_user("carol")
    sock.sendall(_metadata_frame(topic))
    with contextlib.suppress(ConnectionError):
        read_answer(sock)  # the refusal, then the close
    assert closed(sock), "a deleted user's connection stayed open"
    sock.close()
