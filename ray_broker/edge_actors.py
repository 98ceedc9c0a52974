"""Named actors that serve a network port beside the broker — Kafka listeners and consoles:
finding, describing and stopping them by name prefix, and picking a free port once (so the
actor Ray restarts binds the same port again)."""

from __future__ import annotations

import socket
from typing import Any


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def named(namespace: str, prefix: str) -> list[str]:
    import ray

    return [
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == namespace and actor["name"].startswith(prefix)
    ]


def describe_named(namespace: str, prefix: str) -> list[dict[str, Any]]:
    """What each actor's ``describe()`` says.

    Raises:
        BrokerNotRunning: one of them does not answer.
    """
    import ray

    from ray_broker._ray import call
    from ray_broker.errors import BrokerNotRunning

    described = []
    for name in named(namespace, prefix):
        actor = ray.get_actor(name, namespace=namespace)
        described.append(call(actor.describe, timeout_s=30, unavailable=BrokerNotRunning))
    return described


def stop_named(namespace: str, prefix: str) -> int:
    """Kill them (no restart); how many there were."""
    import ray

    names = named(namespace, prefix)
    for name in names:
        try:
            ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
        except ValueError:
            continue
    return len(names)
