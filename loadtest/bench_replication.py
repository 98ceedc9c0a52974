"""Replication cost and failover time on a local multi-node Ray cluster (all on 127.0.0.1).

Run: ``python loadtest/bench_replication.py [--records 1000000]``. Starts a head node and three
worker nodes (replicas on workers only) with Ray's node health checks tightened
(``health_check_period_ms=500``, ``failure_threshold=3``), then measures in the same run:

* produce throughput, RF=1 acks=1 (the baseline) and RF=3 acks=all with min.insync.replicas=2
* failover: a leader's node is killed; time until Ray declares the node dead, and until a record
  sent after the kill is acknowledged (acks=all) by the new leader
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported

import pyarrow as pa  # noqa: E402
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import BATCH_RECORDS, values  # noqa: E402
from measure import machine  # noqa: E402

import ray_broker as rb  # noqa: E402

HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
}
NODE = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 300 * 2**20}
PARTITIONS = 3


def produce_rate(broker: rb.Broker, topic: str, records: int, acks: str | int) -> float:
    producer = broker.producer(acks=acks)
    batch = pa.table({"value": values(BATCH_RECORDS)})
    producer.send_batch(topic, batch).result()
    started = time.perf_counter()
    for _ in range(records // BATCH_RECORDS):
        producer.send_batch(topic, batch)
    producer.flush()
    rate = records / (time.perf_counter() - started)
    producer.close()
    return rate


def sync_sends(broker: rb.Broker, topic: str, count: int = 500) -> dict[str, float]:
    """``send(...).result()`` one at a time, acks=all, linger.ms=0: what a caller that waits
    for each record's durability sees (p50/p99 ms)."""
    producer = broker.producer(acks="all", linger_ms=0)
    for _ in range(50):  # connections, metadata, the data plane's endpoint lookups
        producer.send(topic, b"warm", partition=0).result(timeout=30)
    waits = []
    for _ in range(count):
        started = time.perf_counter()
        producer.send(topic, b"x" * 100, partition=0).result(timeout=30)
        waits.append((time.perf_counter() - started) * 1000)
    producer.close()
    waits.sort()
    return {"sync_p50_ms": waits[len(waits) // 2], "sync_p99_ms": waits[int(len(waits) * 0.99)]}


def failover(cluster: Cluster, workers: list, broker: rb.Broker, topic: str) -> dict[str, float]:
    leader = broker.admin().describe_topic(topic).partitions[0]
    node = next(n for n in workers if n.node_id == leader.leader_node_id)
    producer = broker.producer(acks="all", request_timeout_ms=1_000, retry_backoff_ms=20)
    producer.send(topic, b"warm", partition=0).result(timeout=30)
    killed = time.monotonic()
    cluster.remove_node(node, allow_graceful=False)
    while any(n["NodeID"] == node.node_id and n["Alive"] for n in ray.nodes()):
        time.sleep(0.02)
    declared_dead = time.monotonic() - killed
    producer.send(topic, b"after the kill", partition=0).result(timeout=60)
    writable = time.monotonic() - killed
    producer.close()
    return {"node_declared_dead_s": declared_dead, "partition_writable_again_s": writable}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**NODE, "include_dashboard": False, "_system_config": HEALTH_CHECKS},
    )
    workers = [cluster.add_node(**NODE) for _ in range(3)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-replication-") as data_dir:
            broker = rb.connect(
                data_dir=data_dir,
                namespace="bench-replication",
                config={"replicas.on.head.node": False, "controller.check.interval.ms": 100},
            )
            admin = broker.admin()
            admin.create_topic("rf1", partitions=PARTITIONS, replication_factor=1)
            admin.create_topic(
                "rf3",
                partitions=PARTITIONS,
                replication_factor=3,
                config={"min.insync.replicas": 2},
            )
            rf1 = produce_rate(broker, "rf1", args.records, acks=1)
            rf3 = produce_rate(broker, "rf3", args.records, acks="all")
            sync = sync_sends(broker, "rf3")
            times = failover(cluster, workers, broker, "rf3")
            broker.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(f"\nreplication on a local 4-node cluster (head + 3 workers) — {machine()}")
    print(f"{'produce RF=1 acks=1 (rec/s)':44} {rf1:>14,.0f}")
    print(f"{'produce RF=3 acks=all, min.insync=2 (rec/s)':44} {rf3:>14,.0f}")
    print(f"{'RF=3 / RF=1':44} {rf3 / rf1:>14.2f}")
    print(f"{'sync send(...).result(), RF=3 acks=all, p50 (ms)':44} {sync['sync_p50_ms']:>14.2f}")
    print(f"{'sync send(...).result(), RF=3 acks=all, p99 (ms)':44} {sync['sync_p99_ms']:>14.2f}")
    print(f"{'node declared dead by Ray (s)':44} {times['node_declared_dead_s']:>14.2f}")
    print(
        f"{'partition writable again after kill (s)':44} "
        f"{times['partition_writable_again_s']:>14.2f}"
    )
    row = {"rf1": rf1, "rf3": rf3, "ratio": rf3 / rf1, **sync, **times, "machine": machine()}
    print(json.dumps(row))


if __name__ == "__main__":
    main()
