"""Starting and stopping Kafka listeners beside a broker.

A listener is a named, detached Ray actor on the head node (``ray_broker.kafka:HOST:PORT``),
restarted by Ray if its process dies; it binds again on restart. ``rb.connect(config=
{"kafka.listeners": "127.0.0.1:9092"})`` and ``ray-broker start --kafka-listener`` start
them; ``Broker.shutdown()`` stops them.
"""

from __future__ import annotations

import base64
import uuid
from typing import TYPE_CHECKING, Any

from ray_broker.edge_actors import (
    KAFKA_LISTENER_PREFIX,
    describe_named,
    free_port,
    start_named,
    stop_named,
)
from ray_broker.errors import InvalidConfig

if TYPE_CHECKING:
    from ray_broker.broker import Broker

NAME_PREFIX = KAFKA_LISTENER_PREFIX
START_TIMEOUT_S = 60.0


def parse_listeners(spec: object) -> list[tuple[str, int]]:
    """``"HOST:PORT[,HOST:PORT...]"`` (a ``PLAINTEXT://`` or ``SASL_PLAINTEXT://`` scheme is
    accepted and ignored: security follows the broker's). Port 0 picks a free port.

    Raises:
        InvalidConfig: not a list of host:port pairs.
    """
    if isinstance(spec, str):
        items = [item.strip() for item in spec.split(",") if item.strip()]
    elif isinstance(spec, (list, tuple)):
        items = [str(item).strip() for item in spec]
    else:
        raise InvalidConfig(f"kafka.listeners is 'HOST:PORT[,HOST:PORT]', got {spec!r}")
    listeners = []
    for item in items:
        address = item.split("://", 1)[-1]
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65_535:
            raise InvalidConfig(f"a Kafka listener address is HOST:PORT, got {item!r}")
        listeners.append((host.strip("[]"), int(port)))
    return listeners


def cluster_id(namespace: str) -> str:
    """A stable Kafka cluster id (22 base64 characters, as Kafka's) for a broker namespace."""
    raw = uuid.uuid5(uuid.NAMESPACE_URL, f"ray-broker:{namespace}").bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def start_listener(broker: Broker, host: str, port: int) -> dict[str, Any]:
    """Start (or find) the listener for ``host:port``; returns what it serves, with the port
    it bound (for port 0).

    Raises:
        BrokerNotRunning: the listener could not start (the address is taken, for instance).
    """
    from ray_broker.kafka.listener import KafkaListener

    # Port 0 is resolved here, once: a listener Ray restarts binds the same port again.
    bound_port = port or free_port(host)
    return start_named(
        KafkaListener,
        f"{NAME_PREFIX}{host}:{port}",
        broker.namespace,
        (
            broker.namespace,
            dict(broker._settings),
            host,
            bound_port,
            broker.secured,
            cluster_id(broker.namespace),
        ),
        max_concurrency=10_000,
        ready="start",
        what=f"the Kafka listener on {host}:{port}",
        timeout_s=START_TIMEOUT_S,
    )


def describe_listeners(namespace: str) -> list[dict[str, Any]]:
    return describe_named(namespace, NAME_PREFIX)


def stop_listeners(namespace: str) -> int:
    """Stop every listener of the namespace; how many there were."""
    return stop_named(namespace, NAME_PREFIX)
