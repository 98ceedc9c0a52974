"""Shared by the Kafka listener's test modules: a broker with a listener, and raw frames on
its socket."""

from __future__ import annotations

import socket
import struct
import uuid

import ray_broker as rb
from tests.conftest import start_local_ray


def listening_broker(data_dir, name: str, config: dict, **login) -> rb.Broker:
    """A fresh broker with one Kafka listener on a free loopback port (``.bootstrap``)."""
    start_local_ray()
    broker = rb.connect(
        data_dir=data_dir,
        namespace=f"{name}-{uuid.uuid4().hex[:8]}",
        config={"kafka.listeners": "127.0.0.1:0", **config},
        **login,
    )
    (listener,) = broker.kafka_listeners()
    broker.bootstrap = f"127.0.0.1:{listener['port']}"
    return broker


def raw_connection(kafka) -> socket.socket:
    host, port = kafka.bootstrap.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def frame(api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    header = struct.pack(">hhih", api_key, version, correlation_id, 4) + b"test"
    return struct.pack(">i", len(header) + len(body)) + header + body


def read_answer(sock: socket.socket) -> bytes:
    size = struct.unpack(">i", exactly(sock, 4))[0]
    return exactly(sock, size)


def exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
