"""End-to-end latency measured the way peer brokers are measured.

A producer sends one stamped 100-byte record per tick at a fixed rate; a consumer **in another
process** (its own Ray driver, as a separate service would be) polls and computes receive − send
from the stamp. Both read CLOCK_MONOTONIC, which every process on one host shares.

    python loadtest/latency.py                   # the matrix: rates × linger.ms, p50/p99/p999
    python loadtest/latency.py --rates 2000 --lingers 0 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import pace, percentile_ms  # loadtest/ is this script's directory

STAMP = struct.Struct("<q")  # time.monotonic_ns() at send
VALUE_BYTES = 100
RATES = (100, 1_000, 2_000, 10_000)
LINGERS_MS = (0, 5)


def consume(address: str, namespace: str, topic: str, expected: int, timeout_s: float) -> None:
    """The consumer process: prints one JSON line of latencies (ns) once ``expected`` records
    arrived or ``timeout_s`` passed. Prints "ready" once its fetches are parked at the log end."""
    import ray_broker as rb

    broker = rb.connect(address=address, namespace=namespace)
    consumer = broker.consumer(topic, auto_offset_reset="latest")
    consumer.poll(timeout_ms=200)  # positions at the log end, fetches in flight
    print("ready", flush=True)
    samples: list[int] = []
    deadline = time.monotonic() + timeout_s
    while len(samples) < expected and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=100, max_records=10_000).values():
            now = time.monotonic_ns()
            samples.extend(now - STAMP.unpack_from(r.value)[0] for r in records)
    consumer.close()
    print(json.dumps(samples), flush=True)


def measure(broker: Any, address: str, rate: int, linger_ms: int, seconds: float) -> dict:
    """One cell of the matrix on its own single-partition topic."""
    topic = f"latency-{uuid.uuid4().hex[:6]}"
    admin = broker.admin()
    admin.create_topic(topic, partitions=1)
    expected = int(rate * seconds)
    reader = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--consume",
            json.dumps([address, broker.namespace, topic, expected, seconds + 30]),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None
        if reader.stdout.readline().strip() != "ready":
            raise RuntimeError("the consumer process did not start")
        producer = broker.producer(linger_ms=linger_ms)
        padding = b"x" * (VALUE_BYTES - STAMP.size)
        sent = pace(
            lambda: producer.send(topic, STAMP.pack(time.monotonic_ns()) + padding), rate, seconds
        )
        producer.flush()
        producer.close()
        samples = json.loads(reader.stdout.readline() or "[]")
    finally:
        reader.wait(timeout=60)
    admin.delete_topic(topic)
    warm = samples[len(samples) // 10 :]  # the first tenth warms connections and code paths
    return {
        "rate": rate,
        "linger_ms": linger_ms,
        "sent": sent,
        "received": len(samples),
        "p50_ms": percentile_ms(warm, 50),
        "p99_ms": percentile_ms(warm, 99),
        "p999_ms": percentile_ms(warm, 99.9),
    }


def matrix(
    broker: Any, address: str, rates: tuple[int, ...], lingers: tuple[int, ...], seconds: float
) -> list[dict]:
    return [measure(broker, address, rate, linger, seconds) for linger in lingers for rate in rates]


def print_matrix(rows: list[dict]) -> None:
    print(f"{'linger.ms':>9} {'msg/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'p999 ms':>8} {'recv':>7}")
    for row in rows:
        print(
            f"{row['linger_ms']:>9} {row['rate']:>7} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
            f"{row['p999_ms']:>8.2f} {row['received']:>7}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", type=int, nargs="+", default=list(RATES))
    parser.add_argument("--lingers", type=int, nargs="+", default=list(LINGERS_MS))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--consume", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        consume(*json.loads(args.consume))
        return

    import ray

    import ray_broker as rb

    with tempfile.TemporaryDirectory(prefix="ray-broker-latency-") as data_dir:
        broker = rb.connect(data_dir=Path(data_dir), namespace=f"lat-{uuid.uuid4().hex[:6]}")
        try:
            address = ray.get_runtime_context().gcs_address
            rows = matrix(broker, address, tuple(args.rates), tuple(args.lingers), args.seconds)
        finally:
            broker.shutdown()
    print_matrix(rows)
    for row in rows:
        print(json.dumps({"figure": "e2e_latency", **row}))


if __name__ == "__main__":
    main()
