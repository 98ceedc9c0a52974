"""What ``ray-broker status`` reports: nodes, partitions and their health, disk, group lag.

Collected as plain dicts (the CLI renders them as tables, or prints them with ``--output
json`` for scripts). A partition is *under-replicated* when its in-sync replicas are fewer than
its replicas, and *offline* when it has no leader.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray_broker.runtime import dashboard_url
from ray_broker.views import lag_view, partition_view

DISK_SCAN_TIMEOUT_S = 30.0


def _directory_bytes(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:  # deleted meanwhile (a segment sealed or retention ran)
                continue
    return total


def disk_per_node(data_dir: Path, node_ids: list[str]) -> dict[str, int | None]:
    """Bytes under ``data_dir`` on each live node (None where the node did not answer)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    measure = ray.remote(num_cpus=0)(_directory_bytes)
    refs = {
        node_id: measure.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
        ).remote(str(data_dir))
        for node_id in node_ids
    }
    out: dict[str, int | None] = {}
    for node_id, ref in refs.items():
        try:
            out[node_id] = ray.get(ref, timeout=DISK_SCAN_TIMEOUT_S)
        except Exception:  # a node that cannot run the scan: reported as unknown
            out[node_id] = None
    return out


def collect(broker: Any) -> dict[str, Any]:
    """The broker's state as JSON-ready dicts."""
    import ray

    admin = broker.admin()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    disk = disk_per_node(broker.data_dir, [n["NodeID"] for n in nodes])
    topics = []
    partitions_on: dict[str, int] = {}
    under_replicated = offline = 0
    for name in admin.list_topics():
        description = admin.describe_topic(name)
        rows = []
        for p in description.partitions:
            is_offline = p.offline
            is_under = p.under_replicated
            offline += is_offline
            under_replicated += is_under
            partitions_on[p.leader_node_id] = partitions_on.get(p.leader_node_id, 0) + 1
            rows.append(partition_view(p))
        topics.append({"name": name, "partitions": rows})
    groups = []
    for listing in admin.list_groups():
        description = admin.describe_group(listing.group_id)
        lags = [p.lag for p in description.partitions if p.lag is not None]
        groups.append(
            {
                "group_id": listing.group_id,
                "state": description.state,
                "members": len(description.members),
                "lag": sum(lags),
                "partitions": [lag_view(p) for p in description.partitions],
            }
        )
    return {
        "namespace": broker.namespace,
        "address": ray.get_runtime_context().gcs_address,
        "job_api": dashboard_url(),
        "data_dir": str(broker.data_dir),
        "nodes": [
            {
                "node_id": n["NodeID"],
                "address": n.get("NodeManagerAddress"),
                "cpus": n.get("Resources", {}).get("CPU", 0),
                "leaders": partitions_on.get(n["NodeID"], 0),
                "disk_bytes": disk.get(n["NodeID"]),
            }
            for n in nodes
        ],
        "topics": topics,
        "under_replicated_partitions": under_replicated,
        "offline_partitions": offline,
        "groups": groups,
    }
