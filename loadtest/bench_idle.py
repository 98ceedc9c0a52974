"""What an idle broker costs: CPU and memory per idle partition actor, against a bare Ray actor.

Every partition is a Ray worker process, so what one costs while nothing happens multiplies by
the partition count: it decides how many topics a node holds before the box is busy doing
nothing. Baseline (same run): a bare async Ray actor, the floor any actor pays.

Also what Ray's dashboard (and job server) costs an idle Ray head as ``ray-broker start`` starts
it: the same head with and without it, one after the other (``--dashboard``; baseline: the head
without it).

Run: ``python loadtest/bench_idle.py [--partitions 20] [--seconds 10]`` (also ``bench.py --idle``);
``python loadtest/bench_idle.py --dashboard [--seconds 60]``.
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


def _cpu_seconds(process: psutil.Process) -> float:
    try:
        return sum(process.cpu_times()[:2])
    except psutil.Error:  # gone meanwhile: it used nothing more
        return 0.0


def _cpu_used(pids: list[int], seconds: float) -> float:
    """CPU the processes used over ``seconds``, in % of one core (all of them together)."""
    processes = [psutil.Process(pid) for pid in pids]
    before = [_cpu_seconds(p) for p in processes]
    time.sleep(seconds)
    after = [_cpu_seconds(p) for p in processes]
    used = sum(max(0.0, b - a) for a, b in zip(before, after, strict=True))
    return 100 * used / seconds


def _cpu_percent(pids: list[int], seconds: float) -> float:
    """Mean CPU of one of the processes over ``seconds``, in % of one core."""
    return round(_cpu_used(pids, seconds) / len(pids), 2)


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


def ray_head_idle(seconds: float = 60.0, settle_s: float = 20.0) -> dict[str, Any]:
    """An idle Ray head as ``ray-broker start`` starts it, without the dashboard (baseline) and
    with it: CPU of all its processes together, and their memory."""
    from ray_broker.service import local_ray_processes, start_local_ray, stop_local_ray

    result: dict[str, Any] = {"seconds": seconds}
    for label, dashboard in (("without_dashboard", False), ("with_dashboard", True)):
        address = start_local_ray(dashboard=dashboard)
        try:
            time.sleep(settle_s)  # past start-up work
            pids = [p.pid for p in local_ray_processes(address)]
            # USS: the dashboard's modules are forked and share pages an RSS sum counts twice.
            uss = sum(psutil.Process(pid).memory_full_info().uss for pid in pids)
            result[label] = {
                "processes": len(pids),
                "cpu_percent": round(_cpu_used(pids, seconds), 2),
                "uss_mib": round(uss / 2**20),
            }
        finally:
            stop_local_ray(address)
    result["dashboard_cpu_percent"] = round(
        result["with_dashboard"]["cpu_percent"] - result["without_dashboard"]["cpu_percent"], 2
    )
    result["dashboard_uss_mib"] = (
        result["with_dashboard"]["uss_mib"] - result["without_dashboard"]["uss_mib"]
    )
    return result


def print_ray_head_idle(result: dict[str, Any]) -> None:
    print(f"\nIdle Ray head as `ray-broker start` starts it ({result['seconds']} s)")
    for label in ("without_dashboard", "with_dashboard"):
        row = result[label]
        print(
            f"  {label.replace('_', ' '):<22} {row['cpu_percent']:>6}% of a core  "
            f"{row['uss_mib']} MiB (USS) in {row['processes']} processes"
        )
    print(
        f"  the dashboard costs        {result['dashboard_cpu_percent']:>6}% of a core  "
        f"{result['dashboard_uss_mib']} MiB"
    )


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
    parser.add_argument(
        "--dashboard",
        action="store_true",
        help="instead: an idle Ray head with and without its dashboard",
    )
    args = parser.parse_args()
    if args.dashboard:
        run_standalone(
            "ray_head_idle",
            lambda: ray_head_idle(args.seconds),
            print_ray_head_idle,
            args.json_out,
            attach=False,  # the figure starts the Rays it measures; no other may idle beside them
        )
        return
    run_standalone("idle", lambda: run(args.partitions, args.seconds), print_idle, args.json_out)


if __name__ == "__main__":
    main()
