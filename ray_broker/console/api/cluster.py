"""The cluster, its nodes and its health (``/v3/clusters``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ray_broker.console.api.common import (
    ClusterPath,
    OfCluster,
    User,
)
from ray_broker.console.gateway import Account
from ray_broker.console.state import console_state
from ray_broker.errors import BrokerError

router = APIRouter()

# --- cluster ----------------------------------------------------------------------------------


def _cluster_json(request: Request, user: Account) -> dict[str, Any]:
    state = console_state(request)
    return {
        "kind": "KafkaCluster",
        "cluster_id": state.cluster_id,
        "namespace": state.gateway.namespace,
        "secured": state.gateway.secured,
        "principal": user.principal,
    }


@router.get("/clusters")
def list_clusters(request: Request, user: User) -> dict[str, Any]:
    return {"kind": "KafkaClusterList", "data": [_cluster_json(request, user)]}


@router.get(ClusterPath, dependencies=OfCluster)
def get_cluster(request: Request, user: User) -> dict[str, Any]:
    return _cluster_json(request, user)


@router.get(ClusterPath + "/brokers", dependencies=OfCluster)
def list_nodes(request: Request, user: User) -> dict[str, Any]:
    """Ray nodes with how many partition leaders each holds (as of the last sample); for
    users allowed ``describe`` on the cluster (a tenant's users are not)."""
    user.admin().describe_cluster()  # raises Unauthorized (403) for the others
    snapshot = console_state(request).monitor.snapshot
    nodes = [{**n, "leaders": snapshot.leaders_on(n["node_id"])} for n in snapshot.nodes]
    return {"kind": "KafkaBrokerList", "data": nodes}


@router.get(ClusterPath + "/health", dependencies=OfCluster)
def health(user: User) -> dict[str, Any]:
    """Under-replicated and offline partitions of the topics this user may describe, now."""
    admin = user.admin()
    described = admin.describe_topics(admin.list_topics())
    under, offline = [], []
    for name, topic in described.items():
        if isinstance(topic, BrokerError):
            continue
        for p in topic.partitions:
            if p.offline:
                offline.append({"topic_name": name, "partition_id": p.partition})
            elif p.under_replicated:
                under.append({"topic_name": name, "partition_id": p.partition})
    return {"under_replicated_partitions": under, "offline_partitions": offline}
