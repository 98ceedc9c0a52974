"""What ``ray-broker demo`` does: a whole produce → store → consume round trip, measured."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DEMO_TOPIC = "demo-orders"
SEND_BATCH_RECORDS = 10_000
PER_RECORD_SENDS = 100_000
DEMO_SEGMENT_BYTES = 16 * 1024 * 1024  # small, so the demo seals Parquet segments


@dataclass
class DemoReport:
    steps: list[tuple[str, int | None, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ok: bool = True


def random_values(count: int, value_bytes: int, seed: int = 1) -> pa.Array:
    """``count`` binary values of ``value_bytes`` random bytes, built without Python objects."""
    raw = np.random.default_rng(seed).integers(0, 256, count * value_bytes, dtype=np.uint8)
    offsets = np.arange(0, (count + 1) * value_bytes, value_bytes, dtype=np.int32)
    return pa.BinaryArray.from_buffers(
        pa.binary(), count, [None, pa.py_buffer(offsets), pa.py_buffer(raw.tobytes())]
    )


def run_demo(
    data_dir: Path,
    records: int,
    partitions: int,
    value_bytes: int,
    progress: Callable[[], Any],
    console: Any,
) -> DemoReport:
    import pyarrow.dataset as ds

    import ray_broker as rb

    report = DemoReport()
    started = time.perf_counter()
    with rb.connect(data_dir=data_dir, namespace="ray-broker-demo") as broker:
        report.steps.append(("start embedded Ray + broker", None, time.perf_counter() - started))
        admin = broker.admin()
        admin.create_topic(
            DEMO_TOPIC, partitions=partitions, config={"segment.bytes": DEMO_SEGMENT_BYTES}
        )
        values = random_values(SEND_BATCH_RECORDS, value_bytes)
        producer = broker.producer()
        with progress() as bar:
            task = bar.add_task("send_batch", total=records)
            started = time.perf_counter()
            for sent in range(0, records, SEND_BATCH_RECORDS):
                count = min(SEND_BATCH_RECORDS, records - sent)
                producer.send_batch(DEMO_TOPIC, pa.table({"value": values.slice(0, count)}))
                bar.advance(task, count)
            producer.flush()
            report.steps.append(("produce (send_batch)", records, time.perf_counter() - started))

        singles = min(PER_RECORD_SENDS, records)
        one = values[0].as_py()
        started = time.perf_counter()
        for i in range(singles):
            producer.send(DEMO_TOPIC, value=one, key=b"customer-%d" % (i % 1000))
        producer.flush()
        report.steps.append(("produce (per-record send)", singles, time.perf_counter() - started))

        total = records + singles
        consumer = broker.consumer(DEMO_TOPIC, auto_offset_reset="earliest")
        seen = {p: 0 for p in range(partitions)}
        in_order = True
        with progress() as bar:
            task = bar.add_task("poll_arrow", total=total)
            started = time.perf_counter()
            deadline = time.monotonic() + 120
            while sum(seen.values()) < total and time.monotonic() < deadline:
                table = consumer.poll_arrow(timeout_ms=1_000)
                for partition in range(partitions):
                    part = table.filter(pc.equal(table.column("partition"), partition))
                    if part.num_rows:
                        offsets = part.column("offset").to_numpy()
                        expected = np.arange(seen[partition], seen[partition] + len(offsets))
                        in_order &= bool(np.array_equal(offsets, expected))
                        seen[partition] += len(offsets)
                bar.advance(task, table.num_rows)
            report.steps.append(
                ("consume (poll_arrow)", sum(seen.values()), time.perf_counter() - started)
            )
        consumer.close()
        producer.close()

        consumed = sum(seen.values())
        report.ok = consumed == total and in_order
        report.notes.append(
            f"consumed {consumed:,} of {total:,} records; offsets dense and in order per "
            f"partition: {in_order}"
        )
        topic_dir = broker.data_dir / DEMO_TOPIC
        sealed = sorted(topic_dir.glob("partition=*/*.parquet"))
        history = ds.dataset(topic_dir, format="parquet", partitioning="hive") if sealed else None
        report.notes.append(
            f"data in {topic_dir}: {len(sealed)} sealed Parquet segments"
            + (
                f" holding {history.count_rows():,} records, readable by pyarrow.dataset/DuckDB"
                if history
                else ""
            )
        )
        for p in admin.describe_topic(DEMO_TOPIC).partitions:
            report.notes.append(
                f"partition {p.partition}: offsets {p.log_start_offset:,}..{p.log_end_offset:,}"
            )
        admin.delete_topic(DEMO_TOPIC)
    return report
