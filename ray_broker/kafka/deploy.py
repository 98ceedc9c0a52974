"""Starting and stopping Kafka listeners beside a broker.

A listener is a named, detached Ray actor on the head node (``ray_broker.kafka:HOST:PORT``),
restarted by Ray if its process dies; it binds again on restart. ``rb.connect(config=
{"kafka.listeners": "127.0.0.1:9092"})`` and ``ray-broker start --kafka-listener`` start
them; ``Broker.shutdown()`` stops them.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

from ray_broker.edge_actors import (
    KAFKA_LISTENER_PREFIX,
    free_port,
    start_named,
)

NAME_PREFIX = KAFKA_LISTENER_PREFIX
START_TIMEOUT_S = 60.0


def cluster_id(namespace: str) -> str:
    """A stable Kafka cluster id (22 base64 characters, as Kafka's) for a broker namespace."""
    raw = uuid.uuid5(uuid.NAMESPACE_URL, f"ray-broker:{namespace}").bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def start_listener(
    namespace: str, settings: dict[str, Any], secured: bool, host: str, port: int
) -> dict[str, Any]:
    """Start (or find) the listener for ``host:port`` beside the broker of ``namespace``
    (``settings``: its config; ``secured``: whether clients must log in); returns what it
    serves, with the port it bound (for port 0).

    Raises:
        BrokerNotRunning: the listener could not start (the address is taken, for instance).
    """
    from ray_broker.kafka.listener import KafkaListener

    # Port 0 is resolved here, once: a listener Ray restarts binds the same port again.
    bound_port = port or free_port(host)
    return start_named(
        KafkaListener,
        f"{NAME_PREFIX}{host}:{port}",
        namespace,
        (namespace, dict(settings), host, bound_port, secured, cluster_id(namespace)),
        max_concurrency=10_000,
        ready="start",
        what=f"the Kafka listener on {host}:{port}",
        timeout_s=START_TIMEOUT_S,
    )
