"""Throughput of the peer brokers on this machine, for the same 100-byte records as
``bench.py``: Redis Streams (``XADD`` pipelined 1k at a time, ``XREAD COUNT 10000``) and
RabbitMQ with a durable queue, persistent messages and publisher confirms (pika's blocking
channel, the way its docs publish reliably; consumed with a 1k prefetch, acked in batches).

    python loadtest/bench_peers.py [--records 200000]        # (bench.py --peers runs it too)

A peer whose server does not answer on 127.0.0.1 is skipped with a note. Start them with
``redis-server --bind 127.0.0.1`` and RabbitMQ bound to 127.0.0.1 (see latency.py).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from typing import Any

from latency import peer_clients  # loadtest/ is this script's directory

VALUE = os.urandom(100)
PIPELINE = 1_000


def redis_streams(connect: Any, records: int) -> dict[str, float]:
    client = connect()
    stream = f"bench-{uuid.uuid4().hex[:6]}"
    started = time.perf_counter()
    for start in range(0, records, PIPELINE):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(PIPELINE, records - start)):
            pipe.xadd(stream, {"v": VALUE})
        pipe.execute()
    produce = records / (time.perf_counter() - started)
    read, last = 0, "0-0"
    started = time.perf_counter()
    while read < records:
        reply = client.xread({stream: last}, count=10_000)
        if not reply:
            break
        entries = reply[0][1]
        read += len(entries)
        last = entries[-1][0]
    consume = read / (time.perf_counter() - started)
    client.delete(stream)
    return {"produce_rec_per_s": produce, "consume_rec_per_s": consume, "read": read}


def rabbitmq_durable(connect: Any, records: int) -> dict[str, float]:
    import pika

    connection = connect()
    channel = connection.channel()
    queue = f"bench-{uuid.uuid4().hex[:6]}"
    channel.queue_declare(queue=queue, durable=True)
    channel.confirm_delivery()
    persistent = pika.BasicProperties(delivery_mode=2)
    started = time.perf_counter()
    for _ in range(records):
        channel.basic_publish("", queue, VALUE, properties=persistent)
    produce = records / (time.perf_counter() - started)
    channel.basic_qos(prefetch_count=PIPELINE)
    read = 0
    started = time.perf_counter()
    for method, _, _ in channel.consume(queue, inactivity_timeout=5):
        if method is None:
            break
        read += 1
        if read % 100 == 0 or read == records:
            channel.basic_ack(method.delivery_tag, multiple=True)
        if read == records:
            break
    consume = read / (time.perf_counter() - started)
    channel.cancel()
    channel.queue_delete(queue)
    connection.close()
    return {"produce_rec_per_s": produce, "consume_rec_per_s": consume, "read": read}


def run_peers(records: int) -> list[dict[str, Any]]:
    clients = peer_clients()
    rows = []
    for kind, run in (("redis-streams", redis_streams), ("rabbitmq-durable", rabbitmq_durable)):
        if kind not in clients:
            print(f"{kind}: no server on 127.0.0.1 (or client not installed), skipped")
            continue
        rows.append({"figure": "peer_throughput", "peer": kind, **run(clients[kind], records)})
    return rows


def print_peers(rows: list[dict[str, Any]]) -> None:
    print(f"\npeers, 100-byte records{'':22} {'produce rec/s':>14} {'consume rec/s':>14}")
    for row in rows:
        print(
            f"{row['peer']:45} {row['produce_rec_per_s']:>14,.0f} "
            f"{row['consume_rec_per_s']:>14,.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()
    rows = run_peers(args.records)
    print_peers(rows)
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
