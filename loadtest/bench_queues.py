"""The queue half: share-group accept throughput, priority against FIFO share consumption, and
the delay scheduler with many records pending — on one broker, in one run.

    python loadtest/bench_queues.py [--records 400000] [--delayed 1000000]   # (bench.py --queues)

* share groups: ``--records`` 100-byte records in a 4-partition topic, read by one share
  consumer that acknowledges every record explicitly and sends the acknowledgements once per
  poll (``commit_async``), and — the baseline, same records — by a consumer group's ``poll()``;
* priorities: the same with ``priority.levels=4`` and random priorities, against FIFO;
* delays: ``--delayed`` records sent with due times spread over ``DELAY_SPREAD_S``, starting
  once they have all been sent (``DELAY_START_S`` plus the time sending them takes at
  ``SEND_RATE_GUESS``); reported: send rate, the scheduler's memory with all of them pending,
  and the lateness (fire time - due time) percentiles once they have fired.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
from typing import Any

import pyarrow as pa
from measure import on_fresh_broker  # loadtest/ is this script's directory

PARTITIONS = 4
VALUE_BYTES = 100
POLL_RECORDS = 2_000
DELAY_START_S = 15.0
DELAY_SPREAD_S = 60.0
SEND_RATE_GUESS = 20_000  # delayed sends a second, to start the due times after the sending


def _fill(broker: Any, topic: str, records: int, priorities: bool) -> None:
    from ray_broker.demo import random_values

    chunk = 10_000
    values = random_values(chunk, VALUE_BYTES)
    rng = random.Random(1)
    with broker.producer() as producer:
        for start in range(0, records, chunk):
            n = min(chunk, records - start)
            columns = {"value": values.slice(0, n), "key": pa.array([b"%d" % i for i in range(n)])}
            if priorities:
                columns["priority"] = pa.array([rng.randrange(4) for _ in range(n)], pa.int8())
            producer.send_batch(topic, pa.table(columns))


def _share_accept_rate(broker: Any, topic: str, records: int) -> float:
    consumer = broker.share_consumer(
        topic,
        group_id=f"bench-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        share_acknowledgement_mode="explicit",
        max_poll_records=POLL_RECORDS,
    )
    done = 0
    started = time.perf_counter()
    while done < records:
        for batch in consumer.poll(timeout_ms=5_000).values():
            for record in batch:
                consumer.acknowledge(record)
            done += len(batch)
        consumer.commit_async()
    consumer.commit_sync()
    elapsed = time.perf_counter() - started
    consumer.close()
    return records / elapsed


def _group_poll_rate(broker: Any, topic: str, records: int) -> float:
    consumer = broker.consumer(
        topic,
        group_id=f"bench-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        max_poll_records=POLL_RECORDS,
    )
    done = 0
    started = time.perf_counter()
    while done < records:
        done += sum(len(batch) for batch in consumer.poll(timeout_ms=5_000).values())
    consumer.commit()
    elapsed = time.perf_counter() - started
    consumer.close()
    return records / elapsed


def run_share(broker: Any, records: int) -> dict[str, Any]:
    admin = broker.admin()
    fifo, ranked = f"qb-{uuid.uuid4().hex[:6]}", f"qb-{uuid.uuid4().hex[:6]}"
    admin.create_topic(fifo, partitions=PARTITIONS)
    admin.create_topic(ranked, partitions=PARTITIONS, config={"priority.levels": 4})
    _fill(broker, fifo, records, priorities=False)
    _fill(broker, ranked, records, priorities=True)
    result = {
        "records": records,
        "group_poll": _group_poll_rate(broker, fifo, records),
        "share_accept": _share_accept_rate(broker, fifo, records),
        "share_accept_priority": _share_accept_rate(broker, ranked, records),
    }
    result["share_vs_group_poll"] = result["share_accept"] / result["group_poll"]
    result["priority_vs_fifo"] = result["share_accept_priority"] / result["share_accept"]
    admin.delete_topic(fifo)
    admin.delete_topic(ranked)
    return result


def run_delays(broker: Any, records: int) -> dict[str, Any]:
    import ray

    from ray_broker.config import DELAY_SCHEDULER_NAME

    topic = f"qd-{uuid.uuid4().hex[:6]}"
    broker.admin().create_topic(topic, partitions=PARTITIONS)
    value = b"x" * VALUE_BYTES
    with broker.producer() as producer:
        producer.send(topic, value=value, delay_ms=1).result()  # starts the scheduler
        scheduler = ray.get_actor(DELAY_SCHEDULER_NAME, namespace=broker.namespace)
        before = ray.get(scheduler.describe.remote())
        started = time.perf_counter()
        start_s = DELAY_START_S + records / SEND_RATE_GUESS
        first_due = int(time.time() * 1000 + start_s * 1000)
        spread_ms = int(DELAY_SPREAD_S * 1000)
        for i in range(records):
            producer.send(topic, value=value, deliver_at=first_due + (i * 7919) % spread_ms)
        producer.flush()
        send_rate = records / (time.perf_counter() - started)
    while True:  # until the scheduler holds them all
        pending = ray.get(scheduler.describe.remote())
        if pending["pending"] >= records or time.time() * 1000 > first_due:
            break
        time.sleep(0.5)
    finish_by = time.monotonic() + start_s + DELAY_SPREAD_S + 120
    while time.monotonic() < finish_by:
        fired = ray.get(scheduler.describe.remote())
        if fired["fired"] - before["fired"] >= records:
            break
        time.sleep(1)
    broker.admin().delete_topic(topic)
    return {
        "delayed": records,
        "send_delayed": send_rate,
        "pending_seen": pending["pending"],
        "scheduler_rss_mb_pending": pending["rss_bytes"] / 1e6,
        "index_mb_pending": pending["index_bytes"] / 1e6,
        "fired": fired["fired"] - before["fired"],
        "lateness_ms_p50": fired["lateness_ms"]["p50"],
        "lateness_ms_p99": fired["lateness_ms"]["p99"],
        "lateness_ms_max": fired["lateness_ms"]["max"],
    }


def print_queues(share: dict[str, Any], delays: dict[str, Any] | None) -> None:
    print(f"\nqueues ({VALUE_BYTES}-byte values, {PARTITIONS} partitions, one member)")
    for label, key in (
        ("consumer group poll() (rec/s, baseline)", "group_poll"),
        ("share group, explicit accept (rec/s)", "share_accept"),
        ("share group, 4 priority levels (rec/s)", "share_accept_priority"),
    ):
        print(f"{label:52} {share[key]:>14,.0f}")
    print(f"{'share accept / group poll':52} {share['share_vs_group_poll']:>14.2f}")
    print(f"{'priority / FIFO':52} {share['priority_vs_fifo']:>14.2f}")
    if delays is None:
        return
    print(f"\ndelayed delivery ({delays['delayed']:,} records due over {DELAY_SPREAD_S:.0f} s)")
    for label, key, fmt in (
        ("send with deliver_at (rec/s)", "send_delayed", ",.0f"),
        ("pending in the scheduler", "pending_seen", ",.0f"),
        ("scheduler RSS with them pending (MB)", "scheduler_rss_mb_pending", ",.0f"),
        ("  of which the index's Arrow chunks (MB)", "index_mb_pending", ",.0f"),
        ("fired", "fired", ",.0f"),
        ("lateness p50 (ms)", "lateness_ms_p50", ",.0f"),
        ("lateness p99 (ms)", "lateness_ms_p99", ",.0f"),
        ("lateness max (ms)", "lateness_ms_max", ",.0f"),
    ):
        value = delays[key]
        print(f"{label:52} {'-' if value is None else format(value, fmt):>14}")


def run(broker: Any, records: int, delayed: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    share = run_share(broker, records)
    delays = run_delays(broker, delayed) if delayed else None
    return share, delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--delayed", type=int, default=1_000_000)
    args = parser.parse_args()
    share, delays = on_fresh_broker("qbench", lambda b: run(b, args.records, args.delayed))
    print_queues(share, delays)
    print(json.dumps({"figure": "queues", **share, **(delays or {})}))


if __name__ == "__main__":
    main()
