"""Server-side filtering and push consumption, with their baselines measured in the same run.

    python loadtest/bench_filters.py [--records 10000000] [--push-records 200000]
                                                        # (bench.py --filters)

* filters: ``--records`` 100-byte records in a 4-partition topic (most of them in sealed
  Parquet segments by the time they are read), 1% of them matching — keys ``vip…`` and header
  ``type=order``. Read back by a consumer with a server-side filter (key form and header form)
  against the two ways without one: ``poll()`` of every record filtered in Python (what an
  application writes) and ``poll_arrow()`` filtered with ``pyarrow.compute`` (the fastest
  client-side filter). Reported: records/s examined, seconds, and the Arrow bytes each
  consumer received.
* push: ``--push-records`` records pushed to a handler that only counts them, with credits 1,
  10 and 100 — share groups to an in-process callable and to a Ray actor method, a consumer
  group to a callable — against pulling the same records (share consumer accepting every
  record; consumer-group ``poll_arrow()``). Timed from the first record delivered: start-up
  (the dispatcher actor, joining the group) is not throughput.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from measure import on_fresh_broker  # loadtest/ is this script's directory

PARTITIONS = 4
VALUE_BYTES = 100
CHUNK = 100_000
MATCH_EVERY = 100  # 1% of the records match
KEY_FILTER = "key LIKE 'vip%'"
HEADER_FILTER = "headers.type = 'order'"
POLL_RECORDS = 2_000
CREDITS = (1, 10, 100)
PUSH_BATCH = 500


def _chunk() -> pa.Table:
    """A reusable chunk: every MATCH_EVERY-th record is a VIP order."""
    from ray_broker.demo import random_values
    from ray_broker.storage.schema import HEADER_TYPE

    index = np.arange(CHUNK)
    hits = index % MATCH_EVERY == 0
    keys = pa.array([(b"vip%d" if hit else b"k%d") % i for i, hit in zip(index, hits, strict=True)])
    types = pa.array(np.where(hits, "order", "view").tolist(), pa.binary())
    names = pa.array(["type"] * CHUNK, pa.string())
    pairs = pa.StructArray.from_arrays([names, types], fields=list(HEADER_TYPE.value_type))
    headers = pa.ListArray.from_arrays(pa.array(np.arange(CHUNK + 1, dtype=np.int32)), pairs)
    return pa.table(
        {
            "value": random_values(CHUNK, VALUE_BYTES),
            "key": keys,
            "headers": headers.cast(HEADER_TYPE),
        }
    )


def _fill(broker: Any, topic: str, records: int) -> None:
    chunk = _chunk()
    with broker.producer() as producer:
        for start in range(0, records, CHUNK):
            producer.send_batch(topic, chunk.slice(0, min(CHUNK, records - start)))


def _consumer(broker: Any, topic: str, **options: Any) -> Any:
    return broker.consumer(topic, auto_offset_reset="earliest", **options)


def _read_to_end(consumer: Any, topic: str, records: int, take: Any) -> tuple[int, int, float]:
    """Poll until every partition's position is at its end; ``take(consumer)`` returns
    (matches, Arrow bytes) per poll. Returns matches, bytes, seconds."""
    from ray_broker.structs import TopicPartition

    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    ends = consumer.end_offsets(partitions)
    matches = received = 0
    started = time.perf_counter()
    while any(consumer.position(tp) < ends[tp] for tp in partitions):
        found, size = take(consumer)
        matches += found
        received += size
    return matches, received, time.perf_counter() - started


def run_filters(broker: Any, records: int) -> dict[str, Any]:
    topic = f"fb-{uuid.uuid4().hex[:6]}"
    broker.admin().create_topic(topic, partitions=PARTITIONS)
    started = time.perf_counter()
    _fill(broker, topic, records)
    fill_s = time.perf_counter() - started
    expected = records // MATCH_EVERY
    result: dict[str, Any] = {"records": records, "matching": expected, "fill_s": fill_s}

    def filtered(consumer: Any) -> tuple[int, int]:
        table = consumer.poll_arrow(timeout_ms=1_000, max_records=400_000)
        return table.num_rows, table.nbytes

    def arrow_then_filter(consumer: Any) -> tuple[int, int]:
        table = consumer.poll_arrow(timeout_ms=1_000, max_records=400_000)
        kept = table.filter(pc.starts_with(table.column("key"), "vip"))
        return kept.num_rows, table.nbytes

    def records_then_filter(consumer: Any) -> tuple[int, int]:
        polled = consumer.poll(timeout_ms=1_000, max_records=POLL_RECORDS)
        found = size = 0
        for batch in polled.values():
            for record in batch:
                size += len(record.value or b"") + len(record.key or b"") + 40
                if record.key is not None and record.key.startswith(b"vip"):
                    found += 1
        return found, size

    runs = (
        ("server_key_filter", {"filter": KEY_FILTER}, filtered),
        ("server_header_filter", {"filter": HEADER_FILTER}, filtered),
        ("client_arrow_filter", {}, arrow_then_filter),
        ("client_poll_filter", {"max_poll_records": POLL_RECORDS}, records_then_filter),
    )
    for name, options, take in runs:
        consumer = _consumer(broker, topic, **options)
        matches, received, seconds = _read_to_end(consumer, topic, records, take)
        consumer.close()
        assert matches == expected, (name, matches, expected)
        result[f"{name}_s"] = seconds
        result[f"{name}_rec_per_s"] = records / seconds
        result[f"{name}_bytes"] = received
    baseline = result["client_poll_filter_s"]
    for name in ("server_key_filter", "server_header_filter", "client_arrow_filter"):
        result[f"{name}_vs_client_poll"] = baseline / result[f"{name}_s"]
    result["server_key_filter_vs_client_arrow"] = (
        result["client_arrow_filter_s"] / result["server_key_filter_s"]
    )
    broker.admin().delete_topic(topic)
    return result


class _Counter:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, table: pa.Table) -> None:
        with self.lock:
            self.count += table.num_rows


def _push_rate(broker: Any, topic: str, records: int, credits: int, how: str) -> float:
    import ray

    group = f"push-{uuid.uuid4().hex[:6]}"
    group_type = "consumer" if how == "consumer_callable" else "share"
    counter = _Counter()
    actor = None
    if how == "share_actor":
        actor = ray.remote(num_cpus=0, max_concurrency=max(credits, 1))(_CountingActor).remote()
        handler: Any = actor.handle
        count = lambda: ray.get(actor.count.remote())  # noqa: E731 - local probe
    else:
        handler = counter
        count = lambda: counter.count  # noqa: E731 - local probe
    subscription = broker.subscribe_push(
        topic,
        group_id=group,
        handler=handler,
        credits=credits,
        group_type=group_type,
        auto_offset_reset="earliest",
        max_poll_records=PUSH_BATCH,
    )
    while (first := count()) == 0:  # start-up (dispatcher, group join) is not throughput
        time.sleep(0.005)
    started = time.perf_counter()
    while count() < records:
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    subscription.close()
    if actor is not None:
        ray.kill(actor)
    return (records - first) / elapsed


class _CountingActor:
    def __init__(self) -> None:
        self.total = 0

    def handle(self, table: pa.Table) -> None:
        self.total += table.num_rows

    def count(self) -> int:
        return self.total


def _pull_share(broker: Any, topic: str, records: int) -> float:
    consumer = broker.share_consumer(
        topic,
        group_id=f"pull-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        share_acknowledgement_mode="explicit",
        max_poll_records=PUSH_BATCH,
    )
    done = first = 0
    started = time.perf_counter()
    while done < records:
        for batch in consumer.poll(timeout_ms=5_000).values():
            for record in batch:
                consumer.acknowledge(record)
            done += len(batch)
        consumer.commit_async()
        if not first and done:  # from the first records on, as for push
            first, started = done, time.perf_counter()
    consumer.commit_sync()
    elapsed = time.perf_counter() - started
    consumer.close()
    return (records - first) / elapsed


def _pull_group(broker: Any, topic: str, records: int) -> float:
    consumer = broker.consumer(
        topic, group_id=f"pull-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest"
    )
    done = first = 0
    started = time.perf_counter()
    while done < records:
        done += consumer.poll_arrow(timeout_ms=5_000, max_records=PUSH_BATCH).num_rows
        consumer.commit_async()
        if not first and done:
            first, started = done, time.perf_counter()
    elapsed = time.perf_counter() - started
    consumer.close()
    return (records - first) / elapsed


def run_push(broker: Any, records: int) -> dict[str, Any]:
    topic = f"pb-{uuid.uuid4().hex[:6]}"
    broker.admin().create_topic(topic, partitions=PARTITIONS)
    _fill(broker, topic, records)
    result: dict[str, Any] = {
        "push_records": records,
        "pull_share_accept": _pull_share(broker, topic, records),
        "pull_group_poll_arrow": _pull_group(broker, topic, records),
    }
    for how in ("share_callable", "share_actor", "consumer_callable"):
        for credits in CREDITS:
            result[f"push_{how}_credits_{credits}"] = _push_rate(
                broker, topic, records, credits, how
            )
    broker.admin().delete_topic(topic)
    return result


def print_filters(filters: dict[str, Any], push: dict[str, Any] | None) -> None:
    print(
        f"\nserver-side filters ({filters['records']:,} records, 1% match, "
        f"{VALUE_BYTES}-byte values, {PARTITIONS} partitions)"
    )
    print(f"{'read to the end':44} {'rec/s examined':>15} {'seconds':>9} {'MB received':>12}")
    for label, name in (
        ("poll() + Python filter (baseline)", "client_poll_filter"),
        ("poll_arrow() + pyarrow filter", "client_arrow_filter"),
        (f"server filter {KEY_FILTER}", "server_key_filter"),
        (f"server filter {HEADER_FILTER}", "server_header_filter"),
    ):
        print(
            f"{label:44} {filters[name + '_rec_per_s']:>15,.0f} {filters[name + '_s']:>9.2f} "
            f"{filters[name + '_bytes'] / 1e6:>12,.1f}"
        )
    for label, key in (
        ("key filter vs poll() + Python filter", "server_key_filter_vs_client_poll"),
        ("header filter vs poll() + Python filter", "server_header_filter_vs_client_poll"),
        ("key filter vs poll_arrow() + pyarrow filter", "server_key_filter_vs_client_arrow"),
    ):
        print(f"{label:44} {filters[key]:>14.1f}×")
    if push is None:
        return
    print(f"\npush consumption ({push['push_records']:,} records, batches of {PUSH_BATCH})")
    print(
        f"{'pull: share consumer, accept each (baseline)':52} {push['pull_share_accept']:>12,.0f}"
    )
    print(f"{'pull: consumer group poll_arrow()':52} {push['pull_group_poll_arrow']:>12,.0f}")
    for how, label in (
        ("share_callable", "push: share group → in-process callable"),
        ("share_actor", "push: share group → actor method"),
        ("consumer_callable", "push: consumer group → in-process callable"),
    ):
        for credits in CREDITS:
            value = push[f"push_{how}_credits_{credits}"]
            print(f"{label + f', credits={credits}':52} {value:>12,.0f}")


def run(broker: Any, records: int, push_records: int) -> tuple[dict[str, Any], dict[str, Any]]:
    filters = run_filters(broker, records)
    push = run_push(broker, push_records)
    return filters, push


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--push-records", type=int, default=200_000)
    args = parser.parse_args()
    filters, push = on_fresh_broker("fbench", lambda b: run(b, args.records, args.push_records))
    print_filters(filters, push)
    print(json.dumps({"figure": "filters", **filters}))
    print(json.dumps({"figure": "push", **push}))


if __name__ == "__main__":
    main()
