"""Where the broker's own actors run: the namespace's singletons (Controller, coordinators,
scheduler) and the edge actors (Kafka listeners, consoles) live on the head node, detached and
always restarted. Both the client facade and the edges place actors through here, so neither
imports the other for it."""

from __future__ import annotations

from typing import Any

from ray_broker.config import HEAD_NODE_RESOURCE


def head_node_actor(cls: type, name: str, namespace: str, **options: Any) -> Any:
    """``cls`` as the namespace's detached, always-restarted actor ``name`` on the head node
    (found if it already runs); ``.remote(...)`` on the answer starts or finds it."""
    import ray

    return ray.remote(cls).options(
        name=name,
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        num_cpus=0,
        # On the head node, beside their metadata logs; losing the head loses the cluster
        # anyway unless GCS fault tolerance is set up (see README).
        resources={HEAD_NODE_RESOURCE: 0.001},
        **options,
    )


def singleton(cls: type, name: str, settings: dict[str, Any], namespace: str) -> Any:
    """The namespace's one ``cls`` actor, created if none runs (a restarting one is reused)."""
    return head_node_actor(cls, name, namespace, max_task_retries=-1).remote(settings, namespace)
