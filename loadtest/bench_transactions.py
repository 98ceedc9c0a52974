"""What transactions cost: produce throughput in transactions of 100 and 10k records against
the same idempotent producer without transactions, and read_committed consumption against
read_uncommitted — all in one run on one broker.

    python loadtest/bench_transactions.py [--records 1000000]     # (bench.py --transactions)

Each cell sends ``--records`` 100-byte records with ``send_batch`` (1k-record tables) to a fresh
4-partition topic, RF=1, acks=all; a transaction spans every partition it touches and ends with
a commit (markers into each partition, two coordinator calls).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

import pyarrow as pa
from measure import on_fresh_broker, read_all  # loadtest/ is this script's directory

PARTITIONS = 4
VALUE_BYTES = 100
TABLE_RECORDS = 1_000
TRANSACTION_SIZES = (100, 10_000)


def _produce(
    broker: Any, topic: str, records: int, per_transaction: int | None, flush_every: int = 0
) -> float:
    """rec/s sending ``records`` in transactions of ``per_transaction`` (None: none; then
    ``flush_every`` > 0 waits for the acknowledgements every that many records, the barrier a
    commit has)."""
    from ray_broker.demo import random_values

    rows = min(TABLE_RECORDS, per_transaction or flush_every or TABLE_RECORDS)
    table = pa.table({"value": random_values(rows, VALUE_BYTES)})
    if per_transaction is None:
        producer = broker.producer()
    else:
        producer = broker.producer(transactional_id=f"bench-{uuid.uuid4().hex[:6]}")
        producer.init_transactions()
    sent = 0
    started = time.perf_counter()
    while sent < records:
        if per_transaction is not None:
            producer.begin_transaction()
        in_this = 0
        while in_this < (per_transaction or records) and sent < records:
            producer.send_batch(topic, table)
            in_this += rows
            sent += rows
            if flush_every and sent % flush_every == 0:
                producer.flush()
        if per_transaction is not None:
            producer.commit_transaction()
    producer.flush()
    elapsed = time.perf_counter() - started
    producer.close()
    return sent / elapsed


def run_transactions(broker: Any, records: int) -> dict[str, Any]:
    admin = broker.admin()
    result: dict[str, Any] = {"records": records}
    topics = {}
    cells = [
        ("idempotent", None, 0),
        ("idempotent_flush_10000", None, 10_000),
        *((f"txn_{n}", n, 0) for n in TRANSACTION_SIZES),
    ]
    for label, size, flush_every in cells:
        topic = f"txbench-{uuid.uuid4().hex[:6]}"
        admin.create_topic(topic, partitions=PARTITIONS)
        # Transactions of 100 records cost a coordinator round trip each: a tenth of the
        # records keeps that cell's run short without changing its rate.
        count = records // 10 if size == 100 else records
        result[f"produce_{label}"] = _produce(broker, topic, count, size, flush_every)
        topics[label] = (topic, count)
    topic, count = topics[f"txn_{TRANSACTION_SIZES[-1]}"]
    for isolation in ("read_uncommitted", "read_committed"):
        consumer = broker.consumer(topic, auto_offset_reset="earliest", isolation_level=isolation)
        read, seconds = read_all(consumer, count)
        consumer.close()
        assert read == count, (isolation, read, count)
        result[f"consume_{isolation}"] = read / seconds
    for label in topics:
        admin.delete_topic(topics[label][0])
    result["txn_10k_vs_idempotent"] = result["produce_txn_10000"] / result["produce_idempotent"]
    result["txn_10k_vs_idempotent_flushed"] = (
        result["produce_txn_10000"] / result["produce_idempotent_flush_10000"]
    )
    result["txn_100_vs_idempotent"] = result["produce_txn_100"] / result["produce_idempotent"]
    result["read_committed_vs_uncommitted"] = (
        result["consume_read_committed"] / result["consume_read_uncommitted"]
    )
    return result


def print_transactions(result: dict[str, Any]) -> None:
    print(f"\ntransactions ({VALUE_BYTES}-byte values, {PARTITIONS} partitions, acks=all)")
    rows = [
        ("produce, idempotent, no transactions (rec/s)", "produce_idempotent"),
        (
            "produce, idempotent, waiting for acks every 10k (rec/s)",
            "produce_idempotent_flush_10000",
        ),
        ("produce, transactions of 10k records (rec/s)", "produce_txn_10000"),
        ("produce, transactions of 100 records (rec/s)", "produce_txn_100"),
        ("consume, read_uncommitted (rec/s)", "consume_read_uncommitted"),
        ("consume, read_committed (rec/s)", "consume_read_committed"),
    ]
    for label, key in rows:
        print(f"{label:52} {result[key]:>14,.0f}")
    print(f"{'10k-record transactions / idempotent':52} {result['txn_10k_vs_idempotent']:>14.2f}")
    print(
        f"{'10k-record transactions / acks awaited every 10k':52} "
        f"{result['txn_10k_vs_idempotent_flushed']:>14.2f}"
    )
    print(f"{'100-record transactions / idempotent':52} {result['txn_100_vs_idempotent']:>14.2f}")
    print(
        f"{'read_committed / read_uncommitted':52} {result['read_committed_vs_uncommitted']:>14.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()

    result = on_fresh_broker("txbench", lambda b: run_transactions(b, args.records))
    print_transactions(result)
    print(json.dumps({"figure": "transactions", **result}))


if __name__ == "__main__":
    main()
