"""Named actors that serve a network port beside the broker — Kafka listeners and consoles:
finding, describing and stopping them by name prefix, and picking a free port once (so the
actor Ray restarts binds the same port again)."""

from __future__ import annotations

import socket
from typing import Any

from ray_broker.placement import head_node_actor

# Name prefixes of the edge actors: here, so that the broker can find and stop them by name
# without importing the edges (which import the broker).
KAFKA_LISTENER_PREFIX = "ray_broker.kafka:"
CONSOLE_PREFIX = "ray_broker.console:"


def start_named(
    cls: type,
    name: str,
    namespace: str,
    args: tuple[Any, ...],
    *,
    max_concurrency: int,
    ready: str,
    what: str,
    timeout_s: float,
) -> dict[str, Any]:
    """Start (or find) the detached, restartable actor ``name`` on the head node and return
    what its ``ready`` method answers; an actor that does not get ready is killed.

    Raises:
        BrokerNotRunning: ``what`` did not start (its address is taken, for instance).
    """
    import ray

    from ray_broker._ray import call
    from ray_broker.errors import BrokerNotRunning

    actor = head_node_actor(cls, name, namespace, max_concurrency=max_concurrency).remote(*args)
    try:
        return call(getattr(actor, ready), timeout_s=timeout_s, unavailable=BrokerNotRunning)
    except Exception as exc:
        ray.kill(actor, no_restart=True)
        raise BrokerNotRunning(f"{what} did not start: {exc}") from None


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
