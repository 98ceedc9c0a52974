"""Kafka clients logging in with SASL (SCRAM-SHA-256/512, PLAIN) to a secured broker's Kafka
listener: the broker's users, ACLs enforced by the same actors as for Python clients."""

from __future__ import annotations

import struct
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import TopicAuthorizationFailedError

import ray_broker as rb
from tests.kafka_helpers import listening_broker, raw_connection, read_answer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def secured_kafka(_session_ray, tmp_path_factory):
    broker = listening_broker(
        tmp_path_factory.mktemp("kafka-sasl"),
        "kafka-sasl",
        {"security.enabled": True},
        username="root",
        password="root-pw",
    )
    admin = broker.admin()
    for user in ("alice", "bob"):
        admin.create_user(user, f"{user}-pw")
    yield broker
    broker.shutdown()


def sasl(user: str, mechanism: str, password: str | None = None) -> dict:
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": user,
        "sasl_plain_password": password or f"{user}-pw",
    }


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_each_mechanism_logs_in_and_acls_decide(secured_kafka, mechanism):
    topic = f"s-{uuid.uuid4().hex[:6]}"
    secured_kafka.admin().create_topic(topic, 1)
    secured_kafka.admin().create_acls([rb.Acl("User:alice", "topic", topic, "write")])
    producer = KafkaProducer(bootstrap_servers=secured_kafka.bootstrap, **sasl("alice", mechanism))
    metadata = producer.send(topic, b"from alice").get(timeout=30)
    assert metadata.offset == 0
    producer.close()

    consumer = KafkaConsumer(
        bootstrap_servers=secured_kafka.bootstrap,
        enable_auto_commit=False,
        **sasl("alice", mechanism),
    )
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek(TopicPartition(topic, 0), 0)
    with pytest.raises(TopicAuthorizationFailedError):  # alice may write, not read
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            consumer.poll(timeout_ms=500)
    consumer.close()

    secured_kafka.admin().create_acls([rb.Acl("User:bob", "topic", topic, "read")])
    reader = KafkaConsumer(
        bootstrap_servers=secured_kafka.bootstrap,
        enable_auto_commit=False,
        **sasl("bob", mechanism),
    )
    reader.assign([TopicPartition(topic, 0)])
    reader.seek(TopicPartition(topic, 0), 0)
    values = []
    deadline = time.monotonic() + 30
    while not values and time.monotonic() < deadline:
        for records in reader.poll(timeout_ms=500).values():
            values += [r.value for r in records]
    reader.close()
    assert values == [b"from alice"]


def _authenticate(sock, mechanism: str, message: bytes) -> tuple[int, int]:
    """SaslHandshake v1 + one SaslAuthenticate v1: (handshake error, authenticate error)."""
    from kafka.protocol.sasl import (
        SaslAuthenticateRequest,
        SaslAuthenticateResponse,
        SaslHandshakeRequest,
        SaslHandshakeResponse,
    )

    handshake = SaslHandshakeRequest(version=1, mechanism=mechanism)
    handshake.with_header(correlation_id=1, client_id="raw")
    sock.sendall(bytes(handshake.encode(header=True, framed=True)))
    shaken = SaslHandshakeResponse.decode(read_answer(sock), version=1, header=True)
    login = SaslAuthenticateRequest(version=1, auth_bytes=message)
    login.with_header(correlation_id=2, client_id="raw")
    sock.sendall(bytes(login.encode(header=True, framed=True)))
    answer = SaslAuthenticateResponse.decode(read_answer(sock), version=1, header=True)
    return shaken.error_code, answer.error_code


def test_a_wrong_password_is_refused_and_the_connection_closed(secured_kafka):
    sock = raw_connection(secured_kafka)
    assert _authenticate(sock, "PLAIN", b"\0alice\0wrong") == (0, 58)  # SASL_AUTHENTICATION_FAILED
    assert sock.recv(1) == b""
    sock.close()
    sock = raw_connection(secured_kafka)
    assert _authenticate(sock, "GSSAPI", b"")[0] == 33  # UNSUPPORTED_SASL_MECHANISM
    sock.close()


def test_requests_before_login_close_the_connection(secured_kafka):
    from kafka.protocol.metadata import MetadataRequest

    request = MetadataRequest(version=8, topics=None, allow_auto_topic_creation=False)
    request.with_header(correlation_id=3, client_id="raw")
    sock = raw_connection(secured_kafka)
    sock.sendall(bytes(request.encode(header=True, framed=True)))
    assert sock.recv(1) == b""
    sock.close()
    # ApiVersions is allowed before login (clients ask it first)
    sock = raw_connection(secured_kafka)
    sock.sendall(struct.pack(">ihhih", 10, 18, 0, 9, 0))
    assert struct.unpack(">ih", read_answer(sock)[:6]) == (9, 0)
    sock.close()
