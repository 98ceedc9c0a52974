"""Throughput as the shape of the load changes: partitions (1, 4, 16), keyed or not, and value
size (100 B, 1 KB, 10 KB at the same bytes per cell).

    python loadtest/bench_sweeps.py [--records 1000000] [--megabytes 200]

Each cell produces ``send_batch`` tables (10k records, or 4 MB of values) into a fresh topic
(RF=1) and reads everything back with ``poll_arrow``; rec/s and MB/s of both are printed, then
JSON lines.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

import pyarrow as pa
from measure import on_fresh_broker, read_all  # loadtest/ is this script's directory

BATCH_RECORDS = 10_000
BATCH_BYTES = 4_000_000  # large values: fewer records per table, about the same bytes
PARTITION_COUNTS = (1, 4, 16)
VALUE_SIZES = (100, 1_000, 10_000)


def measure_cell(broker: Any, partitions: int, value_bytes: int, records: int, keyed: bool) -> dict:
    from ray_broker.demo import random_values

    topic = f"sweep-{uuid.uuid4().hex[:6]}"
    admin = broker.admin()
    admin.create_topic(topic, partitions=partitions)
    per_batch = max(1, min(BATCH_RECORDS, BATCH_BYTES // value_bytes, records))
    columns = {"value": random_values(per_batch, value_bytes)}
    if keyed:
        columns["key"] = pa.array([b"%d" % i for i in range(per_batch)])
    batch = pa.table(columns)
    batches = max(records // per_batch, 1)
    producer = broker.producer()
    producer.send_batch(topic, batch).result()  # warm-up: partition actors, code paths
    started = time.perf_counter()
    for _ in range(batches):
        producer.send_batch(topic, batch)
    producer.flush()
    produce_s = time.perf_counter() - started
    producer.close()
    total = (batches + 1) * per_batch
    consumer = broker.consumer(topic, auto_offset_reset="earliest")
    read, consume_s = read_all(consumer, total)
    consumer.close()
    admin.delete_topic(topic)
    produced = batches * per_batch
    return {
        "partitions": partitions,
        "value_bytes": value_bytes,
        "keyed": keyed,
        "records": produced,
        "produce_rec_per_s": produced / produce_s,
        "produce_mb_per_s": produced * value_bytes / produce_s / 1e6,
        "consume_rec_per_s": read / consume_s,
        "consume_mb_per_s": read * value_bytes / consume_s / 1e6,
    }


def run_sweeps(broker: Any, records: int, megabytes: int) -> list[dict]:
    rows = [
        measure_cell(broker, partitions, 100, records, keyed)
        for partitions in PARTITION_COUNTS
        for keyed in (False, True)
    ]
    for size in VALUE_SIZES:
        rows.append(measure_cell(broker, 4, size, megabytes * 1_000_000 // size, False))
    return rows


def print_sweeps(rows: list[dict]) -> None:
    print(
        f"\n{'partitions':>10} {'value B':>8} {'keyed':>6} {'produce rec/s':>14} "
        f"{'MB/s':>8} {'consume rec/s':>14} {'MB/s':>8}"
    )
    for r in rows:
        print(
            f"{r['partitions']:>10} {r['value_bytes']:>8} {str(r['keyed']):>6} "
            f"{r['produce_rec_per_s']:>14,.0f} {r['produce_mb_per_s']:>8,.0f} "
            f"{r['consume_rec_per_s']:>14,.0f} {r['consume_mb_per_s']:>8,.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000, help="per partition-count cell")
    parser.add_argument("--megabytes", type=int, default=200, help="per value-size cell")
    args = parser.parse_args()

    rows = on_fresh_broker("sweeps", lambda b: run_sweeps(b, args.records, args.megabytes))
    print_sweeps(rows)
    for row in rows:
        print(json.dumps({"figure": "sweep", **row}))


if __name__ == "__main__":
    main()
