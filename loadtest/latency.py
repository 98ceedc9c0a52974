"""End-to-end latency measured the way peer brokers are measured, and where it goes.

A producer sends one stamped 100-byte record per tick at a fixed rate; a consumer **in another
process** (its own Ray driver, as a separate service would be) polls and computes receive − send
from the stamp. Both read CLOCK_MONOTONIC, which every process on one host shares.

    python loadtest/latency.py                  # the matrix: rates × linger.ms, p50/p99/p999
    python loadtest/latency.py --quick          # every cell, briefly (a smoke run)
    python loadtest/latency.py --breakdown      # per-hop medians of sampled records
    python loadtest/latency.py --peers          # also Redis Streams / RabbitMQ on 127.0.0.1

The peers run only when their servers answer on 127.0.0.1 (``redis-server``; RabbitMQ with
``guest``) and their clients (``redis``, ``pika``) are installed; the same producer pacing and
consumer process are used for them.
"""

from __future__ import annotations

import argparse
import json
import select
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from measure import pace, percentile_ms, warm  # loadtest/ is this script's directory

STAMP = struct.Struct("<q")  # time.monotonic_ns() at send
VALUE_BYTES = 100
PADDING = b"x" * (VALUE_BYTES - STAMP.size)
RATES = (100, 1_000, 2_000, 10_000)
LINGERS_MS = (0, 5)
QUICK_SECONDS = 0.5
BREAKDOWN_RATE = 200
PEER_QUEUE = "ray-broker-latency"


def stamped() -> bytes:
    return STAMP.pack(time.monotonic_ns()) + PADDING


# --- the consumer process ------------------------------------------------------------------------


def serve_consumer(address: str, namespace: str) -> None:
    """The consumer process: one Ray driver for every cell. Reads one JSON request per line
    ({topic, timeout_s, breakdown}), prints "ready" once its fetches are parked at the log end,
    then, once the parent has written how many records it sent and they all arrived (or
    ``timeout_s`` passed), one JSON line: latencies (ns) and, for a breakdown, its hop stamps."""
    import ray_broker as rb
    from ray_broker.hops import STAMPS

    broker = rb.connect(address=address, namespace=namespace)
    for line in sys.stdin:
        request = json.loads(line)
        STAMPS.enabled = request["breakdown"]
        STAMPS.drain()
        consumer = broker.consumer(request["topic"], auto_offset_reset="latest")
        consumer.poll(timeout_ms=200)  # positions at the log end, fetches in flight
        print("ready", flush=True)
        samples: list[int] = []
        sent: int | None = None
        deadline = time.monotonic() + request["timeout_s"]
        while (sent is None or len(samples) < sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=100, max_records=10_000).values():
                now = time.monotonic_ns()
                for record in records:
                    stamp = STAMP.unpack_from(record.value)[0]
                    samples.append(now - stamp)
                    if STAMPS.enabled:
                        STAMPS.stamp("send", record.offset, stamp)
                        STAMPS.stamp("polled", record.offset, now)
            if sent is None and select.select([sys.stdin], [], [], 0)[0]:
                sent = int(sys.stdin.readline())
        consumer.close()
        print(json.dumps({"samples": samples, "stamps": STAMPS.drain()}), flush=True)


class ConsumerProcess:
    """The parent's side of ``serve_consumer``."""

    def __init__(self, address: str, namespace: str) -> None:
        self._process = subprocess.Popen(
            [sys.executable, __file__, "--serve-consumer", json.dumps([address, namespace])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _write(self, line: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()

    def start(self, topic: str, timeout_s: float, breakdown: bool) -> None:
        """Ask for one cell; returns once the consumer waits at the log end."""
        assert self._process.stdout is not None
        self._write(json.dumps({"topic": topic, "timeout_s": timeout_s, "breakdown": breakdown}))
        if self._process.stdout.readline().strip() != "ready":
            raise RuntimeError("the consumer process did not start (see its stderr)")

    def result(self, sent: int) -> dict[str, Any]:
        """What the consumer measured, once it has received the ``sent`` records."""
        assert self._process.stdout is not None
        self._write(str(sent))
        return json.loads(self._process.stdout.readline() or '{"samples": [], "stamps": []}')

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()


# --- ray-broker -----------------------------------------------------------------------------------


def measure(
    broker: Any,
    reader: ConsumerProcess,
    rate: int,
    linger_ms: int,
    seconds: float,
    breakdown: bool = False,
    producer_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One cell on its own single-partition topic (RF=1)."""
    topic = f"latency-{uuid.uuid4().hex[:6]}"
    admin = broker.admin()
    admin.create_topic(topic, partitions=1, replication_factor=1)
    try:
        reader.start(topic, seconds + 30, breakdown)
        if breakdown:
            admin.hop_stamps(topic, 0, enable=True)
        producer = broker.producer(linger_ms=linger_ms, **(producer_options or {}))
        try:
            sent = pace(lambda: producer.send(topic, stamped()), rate, seconds)
            producer.flush()
        finally:
            producer.close()
        result = reader.result(sent)
        if breakdown:
            result["stamps"] += admin.hop_stamps(topic, 0, enable=False)
    finally:
        admin.delete_topic(topic)
    return {**cell(rate, linger_ms, sent, result["samples"]), "stamps": result["stamps"]}


def cell(rate: int, linger_ms: int, sent: int, samples: list[int]) -> dict[str, Any]:
    steady = warm(samples)
    return {
        "rate": rate,
        "linger_ms": linger_ms,
        "sent": sent,
        "received": len(samples),
        "p50_ms": percentile_ms(steady, 50),
        "p99_ms": percentile_ms(steady, 99),
        "p999_ms": percentile_ms(steady, 99.9),
        "max_ms": max(steady, default=0) / 1e6,
    }


def matrix(
    broker: Any,
    address: str,
    rates: tuple[int, ...] = RATES,
    lingers: tuple[int, ...] = LINGERS_MS,
    seconds: float = 5.0,
    producer_options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every (linger.ms, rate) cell, one consumer process for all of them."""
    reader = ConsumerProcess(address, broker.namespace)
    try:
        rows = [
            measure(broker, reader, rate, linger, seconds, producer_options=producer_options)
            for linger in lingers
            for rate in rates
        ]
    finally:
        reader.close()
    for row in rows:
        row.pop("stamps")
    return rows


def breakdown(
    broker: Any, address: str, rate: int = BREAKDOWN_RATE, seconds: float = 3.0
) -> list[dict[str, Any]]:
    """Per-hop p50/p99 (ms) at ``rate`` msg/s with ``linger.ms=0`` (``ray_broker.hops``)."""
    from ray_broker.hops import BREAKDOWN, STAMPS, by_offset

    reader = ConsumerProcess(address, broker.namespace)
    STAMPS.enabled = True
    STAMPS.drain()
    try:
        row = measure(broker, reader, rate, 0, seconds, breakdown=True)
    finally:
        STAMPS.enabled = False
        reader.close()
    hops = by_offset(row["stamps"] + STAMPS.drain())
    records = warm([hops[offset] for offset in sorted(hops)])
    out = []
    for label, start, end in BREAKDOWN:
        spans = [r[end] - r[start] for r in records if start in r and end in r]
        out.append(
            {
                "hop": label,
                "records": len(spans),
                "p50_ms": percentile_ms(spans, 50),
                "p99_ms": percentile_ms(spans, 99),
            }
        )
    return out


# --- peers ----------------------------------------------------------------------------------------


def peer_clients() -> dict[str, Callable[[], Any]]:
    """Peers whose server answers on 127.0.0.1 and whose client is installed."""
    found: dict[str, Callable[[], Any]] = {}
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1)
        client.ping()
        found["redis-streams"] = lambda: redis.Redis(host="127.0.0.1", port=6379)
    except Exception:  # not installed or not running: the matrix goes without it
        pass
    try:
        import pika

        params = pika.ConnectionParameters(host="127.0.0.1", socket_timeout=1)
        pika.BlockingConnection(params).close()
        found["rabbitmq-durable"] = lambda: pika.BlockingConnection(
            pika.ConnectionParameters(host="127.0.0.1")
        )
    except Exception:  # not installed or not running
        pass
    return found


def peer_consume(kind: str, timeout_s: float) -> None:
    """The peer's consumer process: prints "ready"; once the parent wrote how many it sent and
    they arrived (or ``timeout_s`` passed), a JSON list of latencies (ns)."""
    samples: list[int] = []
    sent: list[int] = []  # the parent's count, once written

    def done() -> bool:
        if not sent and select.select([sys.stdin], [], [], 0)[0]:
            sent.append(int(sys.stdin.readline()))
        return (bool(sent) and len(samples) >= sent[0]) or time.monotonic() >= deadline

    deadline = time.monotonic() + timeout_s
    client = peer_clients()[kind]()
    if kind == "redis-streams":
        last = "$"
        print("ready", flush=True)
        while not done():
            for _stream, entries in client.xread({PEER_QUEUE: last}, block=100, count=10_000):
                now = time.monotonic_ns()
                for entry_id, fields in entries:
                    samples.append(now - STAMP.unpack_from(fields[b"v"])[0])
                    last = entry_id
    else:
        channel = client.channel()
        channel.queue_declare(PEER_QUEUE, durable=True)
        print("ready", flush=True)
        for _method, _props, body in channel.consume(
            PEER_QUEUE, auto_ack=True, inactivity_timeout=0.1
        ):
            if body is not None:
                samples.append(time.monotonic_ns() - STAMP.unpack_from(body)[0])
            if done():
                break
        channel.cancel()
    client.close()
    print(json.dumps(samples), flush=True)


def measure_peer(kind: str, rate: int, seconds: float) -> dict[str, Any]:
    """The same cell against a peer broker (durable RabbitMQ queue with publisher confirms)."""
    client = peer_clients()[kind]()
    if kind == "redis-streams":
        client.delete(PEER_QUEUE)

        def send() -> None:
            client.xadd(PEER_QUEUE, {"v": stamped()})
    else:
        import pika

        channel = client.channel()
        channel.queue_declare(PEER_QUEUE, durable=True)
        channel.queue_purge(PEER_QUEUE)
        channel.confirm_delivery()
        persistent = pika.BasicProperties(delivery_mode=2)

        def send() -> None:
            channel.basic_publish("", PEER_QUEUE, stamped(), persistent)

    reader = subprocess.Popen(
        [sys.executable, __file__, "--peer-consume", json.dumps([kind, seconds + 30])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None and reader.stdin is not None
    try:
        if reader.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {kind} consumer did not start")
        sent = pace(send, rate, seconds)
        reader.stdin.write(f"{sent}\n")
        reader.stdin.flush()
        samples = json.loads(reader.stdout.readline() or "[]")
    finally:
        reader.wait(timeout=60)
        client.close()
    return {"broker": kind, **cell(rate, 0, sent, samples)}


# --- report ---------------------------------------------------------------------------------------


def print_matrix(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'broker':>17} {'linger.ms':>9} {'msg/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'p999 ms':>8} {'max ms':>8} {'recv':>7}"
    )
    for row in rows:
        print(
            f"{row.get('broker', 'ray-broker'):>17} {row['linger_ms']:>9} {row['rate']:>7} "
            f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['p999_ms']:>8.2f} "
            f"{row.get('max_ms', float('nan')):>8.2f} {row['received']:>7}"
        )


def print_breakdown(rows: list[dict[str, Any]], rate: int) -> None:
    print(f"\nwhere the time goes: linger.ms=0, {rate} msg/s, consumer in another process")
    print(f"{'hop':40} {'p50 ms':>8} {'p99 ms':>8} {'records':>8}")
    for row in rows:
        print(f"{row['hop']:40} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f} {row['records']:>8}")


def run(args: argparse.Namespace, broker: Any, address: str) -> list[dict[str, Any]]:
    """What the command line asked for; every row also goes out as a JSON line."""
    rows: list[dict[str, Any]] = []
    if not args.breakdown_only:
        options = {"max_in_flight_requests_per_connection": args.max_in_flight}
        rows = matrix(
            broker, address, tuple(args.rates), tuple(args.lingers), args.seconds, options
        )
        if args.peers:
            for kind in peer_clients():
                rows += [measure_peer(kind, rate, args.seconds) for rate in args.rates]
        print_matrix(rows)
    if args.breakdown or args.breakdown_only:
        rate = args.breakdown_rate
        hops = breakdown(broker, address, rate, max(args.seconds, 1.0))
        print_breakdown(hops, rate)
        rows += [{"figure": "latency_hop", "rate": rate, **hop} for hop in hops]
    pauses = gc_pause_row()
    print(
        f"full garbage collection in this client: {pauses['frozen_ms']:.1f} ms with the loaded "
        f"heap frozen, {pauses['unfrozen_ms']:.1f} ms without (ray_broker/gc_pause.py)"
    )
    rows.append(pauses)
    for row in rows:
        print(json.dumps({"figure": "e2e_latency", **row} if "figure" not in row else row))
    return rows


def gc_pause_row() -> dict[str, Any]:
    """A full collection in this connected client, as it runs (the loaded heap frozen) and
    with the heap unfrozen for the measurement — the pause that was the p99 before."""
    import gc

    def full_ms() -> float:
        started = time.perf_counter()
        gc.collect()
        return (time.perf_counter() - started) * 1000

    frozen = min(full_ms() for _ in range(3))
    count = gc.get_freeze_count()
    gc.unfreeze()
    try:
        unfrozen = min(full_ms() for _ in range(3))
    finally:
        gc.freeze()
    return {
        "figure": "gc_full_collection",
        "frozen_objects": count,
        "frozen_ms": frozen,
        "unfrozen_ms": unfrozen,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rates", type=int, nargs="+", default=list(RATES))
    parser.add_argument("--lingers", type=int, nargs="+", default=list(LINGERS_MS))
    parser.add_argument("--seconds", type=float, default=5.0, help="per cell")
    parser.add_argument("--breakdown", action="store_true", help="also the per-hop breakdown")
    parser.add_argument("--breakdown-only", action="store_true", help="only the breakdown")
    parser.add_argument(
        "--max-in-flight", type=int, default=5, help="producer's max in-flight requests"
    )
    parser.add_argument("--breakdown-rate", type=int, default=BREAKDOWN_RATE, help="msg/s")
    parser.add_argument("--peers", action="store_true", help="also Redis/RabbitMQ if running")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS} s per cell")
    parser.add_argument("--serve-consumer", help=argparse.SUPPRESS)
    parser.add_argument("--peer-consume", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_consumer:
        serve_consumer(*json.loads(args.serve_consumer))
        return
    if args.peer_consume:
        peer_consume(*json.loads(args.peer_consume))
        return
    if args.quick:
        args.seconds = QUICK_SECONDS

    import ray

    import ray_broker as rb

    with tempfile.TemporaryDirectory(prefix="ray-broker-latency-") as data_dir:
        broker = rb.connect(data_dir=Path(data_dir), namespace=f"lat-{uuid.uuid4().hex[:6]}")
        try:
            run(args, broker, ray.get_runtime_context().gcs_address)
        finally:
            broker.shutdown()


if __name__ == "__main__":
    main()
