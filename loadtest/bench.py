"""ray-broker throughput and latency, with ``ray.util.queue.Queue`` measured in the same run.

Run: ``python loadtest/bench.py [--records 2000000] [--quick]``. Starts its own single-node Ray on
127.0.0.1 (or attaches to ``RAY_ADDRESS``), prints a table, then one JSON line per figure.
Figures (100-byte values):

* produce, ``send_batch`` of 10k-record tables into 4 partitions, RF=1
* the same with a key column (murmur2 partitioning, vectorized)
* produce, per-record ``send()`` from one process, without and with keys
* consume, ``poll_arrow`` from 4 partitions
* end-to-end latency p50/p99 of per-record sends at a fixed rate (1 partition, linger.ms=5),
  one consumer polling in another thread
* the same for ``ray.util.queue.Queue`` (per-item and 10k batches): the baseline

Optional parts: ``--latency-matrix``/``--latency-breakdown`` (latency.py), ``--sweeps``
(partitions and value sizes), ``--transactions`` (transactional produce, read_committed),
``--queues`` (share groups, priorities, delayed delivery), ``--filters`` (server-side filters
on a 10M-record backlog, push consumption with credits), ``--security`` (authentication and
ACL checks on vs off), ``--kafka`` (librdkafka through the Kafka listener next to the native
client), ``--console`` (the HTTP API's produce and the console's pages over real HTTP),
``--logging`` (what a logging call costs with ``BrokerHandler``, and shipping),
``--peers`` (Redis Streams and RabbitMQ throughput, when their servers answer on 127.0.0.1),
``--backlog N`` (memory, disk and replay of an N-record backlog), ``--replication`` (RF=1 vs
RF=3 and failover on a local multi-node cluster, in its own process).
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import bench_backlog  # loadtest/ is this script's directory
import bench_console
import bench_filters
import bench_idle
import bench_kafka
import bench_logging
import bench_peers
import bench_plots
import bench_queues
import bench_security
import bench_sweeps
import bench_transactions
import latency
import numpy as np
import pyarrow as pa
from measure import machine, pace, percentile_ms, warm

VALUE_BYTES = 100
BATCH_RECORDS = 10_000
PARTITIONS = 4
# The poll() figure: one loop reading this many records, up to POLL_MAX_RECORDS per call.
POLL_RECORDS = 200_000
POLL_MAX_RECORDS = 10_000
LATENCY_LINGER_MS = 5
GROUP_SESSION_TIMEOUT_MS = 3_000
GROUP_RUNS = 3
_STAMP = struct.Struct("<q")


def values(count: int) -> pa.Array:
    from ray_broker.demo import random_values

    return random_values(count, VALUE_BYTES)


# --- ray-broker ---------------------------------------------------------------------------------


def bench_broker(
    broker: Any,
    address: str,
    records: int,
    per_record: int,
    rate: int,
    seconds: float,
    queue_rate: int,
) -> dict:
    admin = broker.admin()
    topic = f"bench-{uuid.uuid4().hex[:6]}"
    admin.create_topic(topic, partitions=PARTITIONS)
    out: dict[str, float] = {}

    batch = pa.table({"value": values(BATCH_RECORDS)})
    producer = broker.producer()
    producer.send_batch(topic, batch).result()  # warm-up: actors, code paths
    started = time.perf_counter()
    for _ in range(records // BATCH_RECORDS):
        producer.send_batch(topic, batch)
    producer.flush()
    out["produce_send_batch"] = records / (time.perf_counter() - started)

    # With a key column, as most users send: partitioned by murmur2 of each key.
    keyed = batch.append_column("key", pa.array([b"%d" % i for i in range(BATCH_RECORDS)]))
    keyed_batches = max(records // BATCH_RECORDS // 4, 1)
    started = time.perf_counter()
    for _ in range(keyed_batches):
        producer.send_batch(topic, keyed)
    producer.flush()
    out["produce_send_batch_keyed"] = (
        keyed_batches * BATCH_RECORDS / (time.perf_counter() - started)
    )

    one = batch.column("value")[0].as_py()
    started = time.perf_counter()
    for _ in range(per_record):
        producer.send(topic, one)
    producer.flush()
    out["produce_per_record"] = per_record / (time.perf_counter() - started)

    started = time.perf_counter()
    for i in range(per_record):
        producer.send(topic, one, key=b"%d" % i)
    producer.flush()
    out["produce_per_record_keyed"] = per_record / (time.perf_counter() - started)

    total = records + keyed_batches * BATCH_RECORDS + 2 * per_record + BATCH_RECORDS
    consumer = broker.consumer(topic, auto_offset_reset="earliest")
    consumed = 0
    started = time.perf_counter()
    while consumed < total:
        consumed += consumer.poll_arrow(timeout_ms=2_000, max_records=400_000).num_rows
    out["consume_poll_arrow"] = consumed / (time.perf_counter() - started)
    consumer.close()
    producer.close()

    # Record objects, as most applications read: one poll() loop over POLL_RECORDS records.
    consumer = broker.consumer(topic, auto_offset_reset="earliest")
    first = consumer.poll(timeout_ms=2_000, max_records=1)  # fetches under way, as in an app
    consumed = sum(len(records) for records in first.values())
    started = time.perf_counter()
    while consumed < min(POLL_RECORDS, total):
        batch = consumer.poll(timeout_ms=2_000, max_records=POLL_MAX_RECORDS)
        consumed += sum(len(records) for records in batch.values())
    out["consume_poll_records"] = consumed / (time.perf_counter() - started)
    consumer.close()

    admin.delete_topic(topic)
    # Latency on a single-partition topic, the consumer in another process (latency.py).
    reader = latency.ConsumerProcess(address, broker.namespace)
    try:
        cell = latency.measure(broker, reader, rate, LATENCY_LINGER_MS, seconds)
        out.update(
            e2e_p50_ms=cell["p50_ms"], e2e_p99_ms=cell["p99_ms"], e2e_rate=cell["sent"] / seconds
        )
        # And at the rate the baseline can sustain, for a like-for-like comparison.
        cell = latency.measure(broker, reader, queue_rate, LATENCY_LINGER_MS, seconds)
        out.update(e2e_p50_ms_at_queue_rate=cell["p50_ms"], e2e_p99_ms_at_queue_rate=cell["p99_ms"])
    finally:
        reader.close()
    return out


# --- consumer groups ----------------------------------------------------------------------------


def bench_groups(broker: Any, records: int, runs: int = GROUP_RUNS) -> dict:
    """A 4-member group (4 processes) against one consumer process reading the same 4
    partitions, and the time a group takes to rebalance after a member leaves or dies."""
    import ray

    @ray.remote(num_cpus=0)
    class Reader:
        def __init__(self, namespace: str, topic: str, group: str | None) -> None:
            import ray_broker as rb
            from ray_broker.structs import TopicPartition

            self.broker = rb.connect(namespace=namespace)
            options = {
                "auto_offset_reset": "earliest",
                "heartbeat_interval_ms": 100,
                "session_timeout_ms": GROUP_SESSION_TIMEOUT_MS,
            }
            if group is None:
                self.consumer = self.broker.consumer(**options)
                self.consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
            else:
                self.consumer = self.broker.consumer(topic, group_id=group, **options)

        def ready(self) -> int:
            self.consumer.poll_arrow(timeout_ms=0, max_records=1)
            return len(self.consumer.assignment())

        def drain(self, idle_s: float) -> tuple[int, float, float]:
            count, first, last = 0, 0.0, 0.0
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < idle_s:
                n = self.consumer.poll_arrow(timeout_ms=100, max_records=400_000).num_rows
                if n:
                    now = time.time()
                    first = first or now
                    last, count, quiet_since = now, count + n, time.monotonic()
            return count, first, last

        def close(self) -> None:
            self.consumer.close()

    admin = broker.admin()
    topic = f"groups-{uuid.uuid4().hex[:6]}"
    admin.create_topic(topic, partitions=PARTITIONS)
    producer = broker.producer()
    batch = pa.table({"value": values(BATCH_RECORDS)})
    for _ in range(records // BATCH_RECORDS):
        producer.send_batch(topic, batch)
    producer.flush()
    producer.close()

    def run(readers: list[Any]) -> float:
        deadline = time.monotonic() + 60
        while sum(ray.get([r.ready.remote() for r in readers])) < PARTITIONS:
            assert time.monotonic() < deadline, "group did not settle"
        results = ray.get([r.drain.remote(1.0) for r in readers])
        total = sum(c for c, _, _ in results)
        assert total == records, (total, records)
        span = max(last for _, _, last in results) - min(f for _, f, _ in results if f)
        return total / max(span, 1e-3)  # a tiny topic can arrive in one poll

    # Each run re-reads the whole topic; the median of several runs evens out the noise of
    # sub-second windows on a shared 2-core machine.
    single_rates, group_rates = [], []
    for _ in range(runs):
        single = [Reader.remote(broker.namespace, topic, None)]
        single_rates.append(run(single))
        ray.get([r.close.remote() for r in single])
        group = f"bench-{uuid.uuid4().hex[:6]}"
        members = [Reader.remote(broker.namespace, topic, group) for _ in range(PARTITIONS)]
        group_rates.append(run(members))
        if len(group_rates) < runs:
            ray.get([m.close.remote() for m in members])
    single_rate = float(np.median(single_rates))
    group_rate = float(np.median(group_rates))

    def settled(expected: int) -> bool:
        described = admin.describe_group(group)
        return described.state == "Stable" and len(described.members) == expected

    def rebalance(action: Any, expected: int) -> float:
        started = time.monotonic()
        action()
        while not settled(expected):
            ray.get([m.ready.remote() for m in members])  # members reconcile inside poll
        return time.monotonic() - started

    leaver = members.pop()
    leave_s = rebalance(lambda: ray.get(leaver.close.remote()), PARTITIONS - 1)
    victim = members.pop()
    kill_s = rebalance(lambda: ray.kill(victim), PARTITIONS - 2)
    ray.get([m.close.remote() for m in members])
    admin.delete_topic(topic)
    return {
        "group_consume": group_rate,
        "single_consume": single_rate,
        "group_vs_single": group_rate / single_rate,
        "rebalance_after_leave_s": leave_s,
        "rebalance_after_kill_s": kill_s,
        "session_timeout_s": GROUP_SESSION_TIMEOUT_MS / 1000,
    }


# --- baseline: ray.util.queue.Queue --------------------------------------------------------------


def bench_ray_queue(per_item: int, batches: int, rate: int, seconds: float) -> dict:
    from ray.util.queue import Queue

    queue = Queue(maxsize=0)
    one = values(1)[0].as_py()
    out: dict[str, float] = {}
    started = time.perf_counter()
    for _ in range(per_item):
        queue.put(one)
    out["produce_per_record"] = per_item / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(per_item):
        queue.get()
    out["consume_per_record"] = per_item / (time.perf_counter() - started)

    items = values(BATCH_RECORDS).to_pylist()
    started = time.perf_counter()
    for _ in range(batches):
        queue.put_nowait_batch(items)
    out["produce_send_batch"] = batches * BATCH_RECORDS / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(batches):
        queue.get_nowait_batch(BATCH_RECORDS)
    out["consume_poll_arrow"] = batches * BATCH_RECORDS / (time.perf_counter() - started)

    samples: list[int] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set() or not queue.empty():
            try:
                value = queue.get(timeout=0.1)
            except Exception:  # queue.Empty after the timeout
                continue
            samples.append(time.monotonic_ns() - _STAMP.unpack_from(value)[0])

    reader = threading.Thread(target=consume)
    reader.start()
    sent = pace(lambda: queue.put(_STAMP.pack(time.monotonic_ns())), rate, seconds)
    done.set()
    reader.join()
    steady = warm(samples)
    out.update(
        e2e_p50_ms=percentile_ms(steady, 50),
        e2e_p99_ms=percentile_ms(steady, 99),
        e2e_rate=sent / seconds,
    )
    queue.shutdown()
    return out


# --- main ----------------------------------------------------------------------------------------


FIGURES = [
    ("produce_send_batch", "produce, 10k-record batches (rec/s)"),
    ("produce_send_batch_keyed", "produce, 10k-record batches with keys (rec/s)"),
    ("produce_per_record", "produce, per-record send (rec/s)"),
    ("produce_per_record_keyed", "produce, per-record keyed send (rec/s)"),
    ("consume_poll_arrow", "consume, batched (rec/s)"),
    ("consume_poll_records", "consume, poll() of Record objects (rec/s)"),
    ("e2e_p50_ms", "end-to-end latency p50 (ms)"),
    ("e2e_p99_ms", "end-to-end latency p99 (ms)"),
    ("e2e_rate", "latency run: offered rate (msg/s)"),
]


# The queue's figure each of ours is set against, where the names differ.
BASELINE_OF = {"consume_poll_records": "consume_per_record"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--per-record", type=int, default=300_000)
    parser.add_argument("--rate", type=int, default=10_000, help="latency run, msg/s")
    parser.add_argument("--seconds", type=float, default=5.0, help="latency run length")
    parser.add_argument("--queue-items", type=int, default=3_000)
    parser.add_argument("--queue-rate", type=int, default=500, help="ray queue latency, msg/s")
    parser.add_argument("--group-records", type=int, default=4_000_000)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--out", type=Path, help="a folder for the JSON lines, a text table and PNG charts"
    )
    parser.add_argument(
        "--latency-matrix", action="store_true", help="also latency.py's rates × linger.ms matrix"
    )
    parser.add_argument(
        "--latency-breakdown", action="store_true", help="also the per-hop latency breakdown"
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        metavar="N",
        help="also accumulate N records: broker memory (PSS), disk, replay (bench_backlog.py)",
    )
    parser.add_argument(
        "--sweeps", action="store_true", help="also partitions and value-size sweeps"
    )
    parser.add_argument(
        "--queues",
        action="store_true",
        help="also share groups, priorities and delayed delivery (bench_queues.py)",
    )
    parser.add_argument(
        "--filters",
        action="store_true",
        help="also server-side filters and push consumption (bench_filters.py)",
    )
    parser.add_argument(
        "--kafka",
        action="store_true",
        help="also Kafka clients through the Kafka listener vs the native client (bench_kafka.py)",
    )
    parser.add_argument(
        "--console",
        action="store_true",
        help="also the HTTP API's produce and the console's page times (bench_console.py)",
    )
    parser.add_argument(
        "--logging",
        action="store_true",
        help="also the logging handler's call cost and shipping rate (bench_logging.py)",
    )
    parser.add_argument(
        "--idle",
        action="store_true",
        help="also the CPU and memory of idle partition actors (bench_idle.py)",
    )
    parser.add_argument(
        "--security",
        action="store_true",
        help="also throughput with authentication + ACL checks on vs off (bench_security.py)",
    )
    parser.add_argument(
        "--transactions",
        action="store_true",
        help="also transactional produce and read_committed consume (bench_transactions.py)",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also Redis Streams and RabbitMQ throughput when they answer on 127.0.0.1",
    )
    parser.add_argument(
        "--replication",
        action="store_true",
        help="also RF=1 vs RF=3 and failover on a local multi-node cluster (bench_replication.py)",
    )
    args = parser.parse_args()
    if args.quick:
        # A smoke run (tests/test_bench.py): every figure, none of them meaningful.
        args.records, args.per_record, args.seconds, args.queue_items = 100_000, 20_000, 1, 200
        args.group_records = 100_000

    import ray

    import ray_broker as rb

    extra_rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ray-broker-bench-") as data_dir:
        broker = rb.connect(data_dir=data_dir, namespace=f"bench-{uuid.uuid4().hex[:6]}")
        address = ray.get_runtime_context().gcs_address
        try:
            ours = bench_broker(
                broker,
                address,
                args.records,
                args.per_record,
                args.rate,
                args.seconds,
                args.queue_rate,
            )
            baseline = bench_ray_queue(args.queue_items, 10, args.queue_rate, args.seconds)
            groups = bench_groups(broker, args.group_records, 1 if args.quick else GROUP_RUNS)
            if args.latency_matrix or args.latency_breakdown:
                latency_args = argparse.Namespace(
                    rates=list(latency.RATES),
                    lingers=list(latency.LINGERS_MS),
                    seconds=latency.QUICK_SECONDS if args.quick else args.seconds,
                    breakdown=args.latency_breakdown,
                    breakdown_only=not args.latency_matrix,
                    breakdown_rate=latency.BREAKDOWN_RATE,
                    max_in_flight=5,
                    peers=True,
                )
                print()
                extra_rows = latency.run(latency_args, broker, address)
            if args.sweeps:
                sweeps = bench_sweeps.run_sweeps(
                    broker, args.records // 2, 20 if args.quick else 200
                )
                bench_sweeps.print_sweeps(sweeps)
                extra_rows += [{"figure": "sweep", **row, "machine": machine()} for row in sweeps]
            if args.transactions:
                txns = bench_transactions.run_transactions(broker, args.records // 2)
                bench_transactions.print_transactions(txns)
                extra_rows.append({"figure": "transactions", **txns, "machine": machine()})
            if args.queues:
                share, delays = bench_queues.run(
                    broker,
                    args.records // 10,
                    20_000 if args.quick else 1_000_000,
                )
                bench_queues.print_queues(share, delays)
                extra_rows.append(
                    {"figure": "queues", **share, **(delays or {}), "machine": machine()}
                )
            if args.filters:
                filters, push = bench_filters.run(
                    broker,
                    200_000 if args.quick else 10_000_000,
                    20_000 if args.quick else 200_000,
                )
                bench_filters.print_filters(filters, push)
                extra_rows.append({"figure": "filters", **filters, "machine": machine()})
                extra_rows.append({"figure": "push", **push, "machine": machine()})
            if args.security:
                security = bench_security.run(
                    100_000 if args.quick else args.records, 20_000 if args.quick else 200_000
                )
                bench_security.print_security(security)
                extra_rows.append({"figure": "security", **security, "machine": machine()})
            if args.kafka:
                kafka = bench_kafka.run(20_000 if args.quick else 200_000)
                bench_kafka.print_kafka(kafka)
                extra_rows.append({"figure": "kafka", **kafka, "machine": machine()})
            if args.console:
                console = bench_console.run(
                    20_000 if args.quick else 200_000, 3 if args.quick else 100, 100
                )
                bench_console.print_console(console)
                extra_rows.append({"figure": "console", **console, "machine": machine()})
            if args.logging:
                shipping = bench_logging.run(20_000 if args.quick else 200_000)
                bench_logging.print_logging(shipping)
                extra_rows.append({"figure": "logging", **shipping, "machine": machine()})
            if args.idle:
                idle = bench_idle.run(5 if args.quick else 20, 2 if args.quick else 10)
                bench_idle.print_idle(idle)
                extra_rows.append({"figure": "idle", **idle, "machine": machine()})
            if args.backlog:
                backlog = bench_backlog.run_backlog(broker, args.backlog)
                bench_backlog.print_backlog(backlog)
                extra_rows.append({"figure": "backlog", **backlog, "machine": machine()})
        finally:
            broker.shutdown()

    print(
        f"\nray-broker vs ray.util.queue.Queue — {machine()}, {VALUE_BYTES}-byte values, "
        f"{PARTITIONS} partitions, RF=1"
    )
    print(f"{'figure':46} {'ray-broker':>14} {'ray queue':>14} {'ratio':>9}")
    rows = []
    for key, label in FIGURES:
        # The queue has no keys: keyed figures compare with its (unkeyed) put of the same shape.
        base = baseline.get(BASELINE_OF.get(key, key.removesuffix("_keyed")))
        ratio = ours[key] / base if base else float("nan")
        if key.startswith("e2e_p"):
            ratio = base / ours[key]  # >1: ray-broker is faster
        print(
            f"{label:46} {ours[key]:>14,.2f} {base if base else float('nan'):>14,.2f} "
            f"{ratio:>9,.1f}"
        )
        rows.append(
            {
                "figure": key,
                "ray_broker": ours[key],
                "ray_queue": base,
                "ratio": ratio,
                "machine": machine(),
            }
        )
    per_item = ours["produce_per_record"] / baseline["produce_per_record"]
    get_item = ours["consume_poll_arrow"] / baseline["consume_per_record"]
    print(f"{'per-item put vs ray queue put':40} {per_item:>39,.0f}x")
    print(f"{'batched consume vs ray queue get':40} {get_item:>39,.0f}x")
    for q in ("p50", "p99"):
        key = f"e2e_{q}_ms_at_queue_rate"
        print(
            f"{'latency ' + q + ' at the queue rate (ms)':40} {ours[key]:>14,.2f} "
            f"{baseline[f'e2e_{q}_ms']:>14,.2f} {baseline[f'e2e_{q}_ms'] / ours[key]:>9,.1f}"
        )
        rows.append({"figure": key, "ray_broker": ours[key], "ray_queue": baseline[f"e2e_{q}_ms"]})
    rows.append({"figure": "per_record_put_vs_queue_put", "ratio": per_item})
    print(f"\nconsumer groups ({PARTITIONS} partitions, members in separate processes)")
    print(f"{'4-member group consume (rec/s)':40} {groups['group_consume']:>14,.0f}")
    print(f"{'1 consumer, 4 partitions (rec/s)':40} {groups['single_consume']:>14,.0f}")
    print(f"{'group / single':40} {groups['group_vs_single']:>14.2f}")
    print(f"{'rebalance after a member leaves (s)':40} {groups['rebalance_after_leave_s']:>14.2f}")
    print(
        f"{'rebalance after a member dies (s)':40} {groups['rebalance_after_kill_s']:>14.2f}"
        f"   (session.timeout.ms={GROUP_SESSION_TIMEOUT_MS})"
    )
    rows.append({"figure": "consumer_groups", **groups, "machine": machine()})
    rows.append({"figure": "consume_vs_queue_get", "ratio": get_item})
    for row in rows:
        print(json.dumps(row))
    rows += extra_rows
    if args.peers:
        peers = bench_peers.run_peers(args.records // 10)
        bench_peers.print_peers(peers)
        rows += [{**row, "machine": machine()} for row in peers]
    if args.replication:
        rows += run_replication_bench(args.quick)
    lines = "\n".join(json.dumps(r) for r in rows) + "\n"
    if args.json_out:
        args.json_out.write_text(lines)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench.jsonl").write_text(lines)
        for chart in bench_plots.draw(rows, args.out):
            print(f"wrote {chart}")


def run_replication_bench(quick: bool) -> list[dict]:
    """bench_replication.py in its own process: it starts its own multi-node cluster, which
    one Ray driver cannot do beside the broker this process is attached to."""
    script = Path(__file__).with_name("bench_replication.py")
    command = [sys.executable, str(script), *(["--records", "100000"] if quick else [])]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    print(done.stdout)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


if __name__ == "__main__":
    main()
