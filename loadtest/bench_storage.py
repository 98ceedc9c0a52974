"""Storage-engine throughput, single process, no Ray: append, memory read, Parquet read.

Run: ``python loadtest/bench_storage.py [--records 2000000]``. Prints a table and one JSON line per
figure. The baseline in the same run is a plain ``os.write`` of the bytes the WAL writes, the
ceiling any write-ahead log on that file system can reach. Each figure is taken on the disk (what a
durable log sustains once the page cache starts writing back) and on tmpfs (the CPU cost alone).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from ray_broker.demo import random_values
from ray_broker.storage import Log, LogConfig

VALUE_BYTES = 100
BATCH_RECORDS = 10_000


def rate(records: int, seconds: float) -> float:
    return records / seconds if seconds > 0 else float("inf")


def write_baseline(records: int, directory: Path, payload: pa.Buffer) -> dict[str, object]:
    """Plain os.write of the bytes the WAL writes: the ceiling of any log on this file system."""
    fd = os.open(directory / "baseline.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    start = time.perf_counter()
    for _ in range(records // BATCH_RECORDS):
        os.write(fd, payload)
    seconds = time.perf_counter() - start
    os.close(fd)
    os.unlink(directory / "baseline.bin")
    return {
        "name": f"os.write baseline [{directory.name}]",
        "records_per_s": rate(records, seconds),
    }


def read_all(log: Log) -> tuple[int, float]:
    start = time.perf_counter()
    offset = 0
    while offset < log.log_end_offset:
        offset += log.read(offset, max_records=100_000).num_rows
    return offset, time.perf_counter() - start


def bench(records: int, directory: Path) -> list[dict[str, object]]:
    """All figures for a log in ``directory``, after a baseline on the same file system."""
    batch = pa.table({"value": random_values(BATCH_RECORDS, VALUE_BYTES, seed=7)})
    batches = records // BATCH_RECORDS
    label = f"[{directory.name}]"
    config = LogConfig(segment_bytes=1 << 40)  # one segment: measure append, not sealing
    log = Log(directory / "topic" / "partition=0", config)
    log.append(batch)
    payload = log.read(0, BATCH_RECORDS).to_batches()[0].serialize()
    log.truncate_to(0)
    os.sync()  # start each phase without dirty pages left by the one before
    results = [write_baseline(records, directory, payload)]
    os.sync()

    start = time.perf_counter()
    for _ in range(batches):
        log.append(batch)
    results.append(
        {
            "name": f"append (memory + WAL) {label}",
            "records_per_s": rate(records, time.perf_counter() - start),
        }
    )

    read, seconds = read_all(log)
    results.append({"name": f"read from memory {label}", "records_per_s": rate(read, seconds)})

    os.sync()
    start = time.perf_counter()
    log.roll()
    log.seal_pending()
    results.append(
        {
            "name": f"seal to Parquet (zstd) {label}",
            "records_per_s": rate(records, time.perf_counter() - start),
        }
    )

    read, seconds = read_all(log)
    assert read == records, (read, records)
    results.append({"name": f"read from Parquet {label}", "records_per_s": rate(read, seconds)})
    log.close()

    for result in results:
        result["ratio_to_baseline"] = round(
            result["records_per_s"] / results[0]["records_per_s"], 3
        )
        result.update(records=records, value_bytes=VALUE_BYTES, cores=os.cpu_count())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=2_000_000)
    args = parser.parse_args()
    results = []
    # The disk shows what a durable log sustains; tmpfs (if present) isolates the CPU cost.
    for parent in (tempfile.gettempdir(), "/dev/shm"):
        if not os.path.isdir(parent):
            continue
        with tempfile.TemporaryDirectory(prefix="bench-storage-", dir=parent) as tmp:
            target = Path(tmp) / ("tmpfs" if parent == "/dev/shm" else "disk")
            target.mkdir()
            results += bench(args.records, target)
    print(f"{'figure':36} {'records/s':>14} {'vs baseline':>12}")
    for r in results:
        print(f"{r['name']:36} {r['records_per_s']:>14,.0f} {r['ratio_to_baseline']:>12}")
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
