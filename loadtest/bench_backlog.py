"""The backlog run: accumulate N records, then report what holding them costs and how fast they
replay — the flash sale's "hundreds of millions of messages, kept 3 days".

    python loadtest/bench_backlog.py --records 20000000        # (bench.py --backlog N runs it too)

Broker memory is the sum of PSS over the broker's actor processes (partitions, Controller, group
coordinator): RSS would count Ray's shared object-store pages once per process. It is sampled as
the backlog grows, so a memory that grows with the backlog shows. Disk is the bytes under the
topic's directory; replay is one consumer reading everything from the beginning with
``poll_arrow`` (sealed segments come from Parquet).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
from measure import on_fresh_broker, read_all  # loadtest/ is this script's directory

BATCH_RECORDS = 100_000
VALUE_BYTES = 100
PARTITIONS = 4
SAMPLES = 5
BROKER_PROCESS_TITLES = ("ray::PartitionActor", "ray::Controller", "ray::GroupCoordinator")


def broker_pss_bytes() -> int:
    """PSS summed over this machine's broker actor processes."""
    import psutil

    total = 0
    for process in psutil.process_iter(["cmdline"]):
        try:
            title = " ".join(process.info["cmdline"] or ())
            if title.startswith(BROKER_PROCESS_TITLES):
                total += process.memory_full_info().pss
        except (psutil.Error, AttributeError):  # ended meanwhile, or no PSS on this OS
            continue
    return total


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_backlog(broker: Any, records: int, progress: Any = None) -> dict[str, Any]:
    """Produce ``records`` into a fresh topic, sample memory, measure disk and replay."""
    from ray_broker.demo import random_values

    topic = f"backlog-{uuid.uuid4().hex[:6]}"
    admin = broker.admin()
    admin.create_topic(topic, partitions=PARTITIONS)
    batch = pa.table({"value": random_values(BATCH_RECORDS, VALUE_BYTES)})
    batches = max(records // BATCH_RECORDS, 1)
    every = max(batches // SAMPLES, 1)
    samples = []
    task = progress.add_task("backlog: producing", total=batches) if progress else None
    producer = broker.producer()
    started = time.perf_counter()
    for i in range(1, batches + 1):
        producer.send_batch(topic, batch)
        if progress:
            progress.advance(task)
        if i % every == 0 or i == batches:
            producer.flush()
            samples.append({"records": i * BATCH_RECORDS, "broker_pss_bytes": broker_pss_bytes()})
    producer.flush()
    produce_s = time.perf_counter() - started
    producer.close()
    total = batches * BATCH_RECORDS

    consumer = broker.consumer(topic, auto_offset_reset="earliest")
    task = progress.add_task("backlog: replaying", total=total) if progress else None
    read, replay_s = read_all(consumer, total, progress, task)
    consumer.close()
    disk = directory_bytes(broker.data_dir / topic)
    admin.delete_topic(topic)
    return {
        "records": total,
        "produce_rec_per_s": total / produce_s,
        "replayed": read,
        "replay_rec_per_s": read / replay_s,
        "disk_bytes": disk,
        "broker_pss_bytes": samples[-1]["broker_pss_bytes"],
        "broker_pss_max_bytes": max(s["broker_pss_bytes"] for s in samples),
        "samples": samples,
    }


def print_backlog(result: dict[str, Any]) -> None:
    gib = 2**30
    print(
        f"\nbacklog of {result['records']:,} records "
        f"({VALUE_BYTES}-byte values, {PARTITIONS} partitions)"
    )
    print(f"{'produce (rec/s)':40} {result['produce_rec_per_s']:>14,.0f}")
    print(f"{'replay from the beginning (rec/s)':40} {result['replay_rec_per_s']:>14,.0f}")
    print(f"{'disk (GiB)':40} {result['disk_bytes'] / gib:>14.2f}")
    print(f"{'broker memory, PSS at the end (GiB)':40} {result['broker_pss_bytes'] / gib:>14.2f}")
    growth = ", ".join(
        f"{s['records'] / 1e6:.0f}M: {s['broker_pss_bytes'] / gib:.2f}" for s in result["samples"]
    )
    print(f"{'PSS as the backlog grew (GiB)':40} {growth}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20_000_000)
    args = parser.parse_args()

    from rich.progress import Progress

    def run(broker: Any) -> dict[str, Any]:
        with Progress(transient=True) as progress:
            return run_backlog(broker, args.records, progress)

    result = on_fresh_broker("backlog", run)
    print_backlog(result)
    print(json.dumps({"figure": "backlog", **result}))


if __name__ == "__main__":
    main()
