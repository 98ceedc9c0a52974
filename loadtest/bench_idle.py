"""What an idle broker costs: CPU and memory per idle partition actor, against a bare Ray actor.

Every partition is a Ray worker process, so what one costs while nothing happens multiplies by
the partition count: it decides how many topics a node holds before the box is busy doing
nothing. Baseline (same run): a bare async Ray actor, the floor any actor pays.

Run: ``python loadtest/bench_idle.py [--partitions 20] [--seconds 10]`` (also ``bench.py --idle``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from typing import Any

import psutil
from measure import run_standalone  # loadtest/ is this script's directory


def _cpu_percent(pids: list[int], seconds: float) -> float:
    """Mean CPU of the processes over ``seconds``, in % of one core."""
    processes = [psutil.Process(pid) for pid in pids]
    before = [sum(p.cpu_times()[:2]) for p in processes]
    time.sleep(seconds)
    after = [sum(p.cpu_times()[:2]) for p in processes]
    used = sum(b - a for a, b in zip(before, after, strict=True))
    return round(100 * used / seconds / len(pids), 2)


def _rss_mib(pids: list[int]) -> float:
    return round(statistics.median(psutil.Process(p).memory_info().rss for p in pids) / 2**20)


def _bare_actors(count: int, seconds: float, settle_s: float) -> dict[str, Any]:
    import ray

    @ray.remote(num_cpus=0)
    class Bare:
        async def pid(self) -> int:
            return os.getpid()

    actors = [Bare.remote() for _ in range(count)]
    pids = ray.get([a.pid.remote() for a in actors])
    time.sleep(settle_s)
    try:
        return {"cpu_percent": _cpu_percent(pids, seconds), "rss_mib": _rss_mib(pids)}
    finally:
        for actor in actors:
            ray.kill(actor)


def run(partitions: int = 20, seconds: float = 10.0, settle_s: float = 3.0) -> dict[str, Any]:
    import ray

    import ray_broker as rb

    result: dict[str, Any] = {"partitions": partitions, "seconds": seconds}
    result["bare_ray_actor"] = _bare_actors(partitions, seconds, settle_s)
    with tempfile.TemporaryDirectory(prefix="ray-broker-idle-") as data_dir:
        broker = rb.connect(data_dir=data_dir, namespace=f"idle-{uuid.uuid4().hex[:6]}")
        try:
            admin = broker.admin()
            started = time.perf_counter()
            for i in range(partitions):
                admin.create_topic(f"idle-{i:03d}", partitions=1)
            result["topic_create_s"] = round((time.perf_counter() - started) / partitions, 3)
            producer = broker.producer()
            for i in range(partitions):  # one record each: every actor has served a write
                producer.send(f"idle-{i:03d}", b"x")
            producer.flush()
            leaders = [broker._metadata.topic(f"idle-{i:03d}").leader(0) for i in range(partitions)]
            pids = ray.get([h.__ray_call__.remote(lambda actor: os.getpid()) for h in leaders])
            pandas = ray.get(
                [
                    h.__ray_call__.remote(lambda actor: "pandas" in __import__("sys").modules)
                    for h in leaders
                ]
            )
            time.sleep(settle_s)  # past start-up work
            result["partition_actor"] = {
                "cpu_percent": _cpu_percent(pids, seconds),
                "rss_mib": _rss_mib(pids),
                "pandas_loaded": any(pandas),
            }
        finally:
            broker.shutdown()
    return result


def print_idle(result: dict[str, Any]) -> None:
    bare, ours = result["bare_ray_actor"], result["partition_actor"]
    print(f"\nIdle cost per actor ({result['partitions']} actors, {result['seconds']} s)")
    print(
        f"  bare Ray actor (baseline)    {bare['cpu_percent']:>6}% of a core  {bare['rss_mib']} MiB"
    )
    print(
        f"  idle partition actor         {ours['cpu_percent']:>6}% of a core  {ours['rss_mib']} MiB"
    )
    print(f"  pandas imported in a partition actor: {ours['pandas_loaded']}")
    print(f"  topic creation (1 partition): {result['topic_create_s']} s each")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--partitions", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json-out", type=str)
    args = parser.parse_args()
    run_standalone("idle", lambda: run(args.partitions, args.seconds), print_idle, args.json_out)


if __name__ == "__main__":
    main()
