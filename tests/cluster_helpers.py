"""Real multi-node Ray clusters on one machine (every node on 127.0.0.1) for the replication
and fault tests, and the waits and lookups those tests share."""

from __future__ import annotations

import os
import time

import ray
from ray.cluster_utils import Cluster

from ray_broker import errors

FAST_HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
}
NODE_MEMORY = 200 * 2**20


class LocalCluster:
    def __init__(self, workers: int = 3, token_auth: bool = True) -> None:
        ray.shutdown()  # the session's single-node Ray, if any; restarted after this test
        # ``token_auth=False`` (for the on-demand chaos runs only): with Ray's default token
        # auth, nodes added after several node removals were seen to never start the actors
        # pinned to them (leases cancelled as unschedulable, raylets logging "Missing
        # authorization header") — a harness artifact that hid the behaviour under test. The
        # driver keeps the mode it first connected with, so a process that turns it off cannot
        # start a token-auth Ray afterwards: only runs that end with this cluster may do it.
        if not token_auth:
            os.environ["RAY_AUTH_MODE"] = "disabled"
        self.cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "node_ip_address": "127.0.0.1",
                "include_dashboard": False,
                "object_store_memory": NODE_MEMORY,
                "_system_config": FAST_HEALTH_CHECKS,
            },
        )
        self.workers: list = []
        for _ in range(workers):
            self.add_worker()
        self.cluster.wait_for_nodes()
        ray.init(address=self.cluster.address, log_to_driver=False)

    def add_worker(self):
        node = self.cluster.add_node(
            num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=NODE_MEMORY
        )
        self.workers.append(node)
        return node

    def kill_node(self, node_id: str) -> None:
        node = next(n for n in self.workers if n.node_id == node_id)
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)

    def shutdown(self) -> None:
        ray.shutdown()
        self.cluster.shutdown()


def wait_until(condition, timeout_s: float = 60, step_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = condition()
        except errors.BrokerError:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(step_s)


def partition_info(broker, topic: str, partition: int):
    return broker.admin().describe_topic(topic).partitions[partition]


def replica_pid(broker, topic: str, partition: int, slot: str) -> int:
    record_id = broker.admin().describe_topic(topic).topic_id
    handle = ray.get_actor(
        f"ray_broker.partition.{record_id}.{partition}.{slot}", namespace=broker.namespace
    )
    return ray.get(handle.info.remote(), timeout=30)["pid"]
