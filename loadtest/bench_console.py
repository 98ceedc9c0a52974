"""The HTTP API and the web console, measured over real HTTP against the console actor.

    python loadtest/bench_console.py [--records 200000] [--topics 100] [--groups 100]

* API produce: ``records:batch`` bodies of 1,000 JSON entries (100-character STRING values),
  four client threads, to acknowledgement (``acks=all``); the native ``send()`` of the same
  records in the same run is the baseline.
* Pages: p50/p99 time to the full answer of the overview, its live fragment, a topic page
  (partitions and the first 50 records) and a group page, on a broker holding ``--topics``
  topics and ``--groups`` groups with committed offsets. One partition actor costs ~80 MB on
  this machine, so a real broker of 1,000 topics does not fit in 24 GiB; the overview's render
  path is therefore also timed on a 1,000-topic, 100-group sample built in memory (the
  listing that the broker would answer is answered from the same sample), which is what a
  page of that size costs beyond the broker's three listing calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from typing import Any

import httpx
import psutil
from measure import run_standalone  # loadtest/ is this script's directory

VALUE_CHARS = 100
BATCH_ENTRIES = 1_000
CLIENT_THREADS = 4
PAGE_SAMPLES = 40


def _percentiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100)
    return {"p50_ms": round(cuts[49] * 1000, 1), "p99_ms": round(cuts[98] * 1000, 1)}


def api_produce(base: str, cluster: str, topic: str, records: int) -> float:
    value = "x" * VALUE_CHARS
    batches = records // BATCH_ENTRIES
    bodies = [
        json.dumps(
            {
                "entries": [
                    {"id": str(i), "value": {"type": "STRING", "data": value}}
                    for i in range(BATCH_ENTRIES)
                ]
            }
        ).encode()
    ] * batches
    url = f"{base}/v3/clusters/{cluster}/topics/{topic}/records:batch"
    failures: list[str] = []

    def client(share: list[bytes]) -> None:
        with httpx.Client(timeout=120) as http:
            for body in share:
                answer = http.post(url, content=body, headers={"content-type": "application/json"})
                if answer.status_code != 200 or answer.json()["failures"]:
                    failures.append(answer.text[:200])

    threads = [
        threading.Thread(target=client, args=(bodies[i::CLIENT_THREADS],))
        for i in range(CLIENT_THREADS)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    assert not failures, failures[:3]
    return batches * BATCH_ENTRIES / elapsed


def native_produce(broker: Any, topic: str, records: int) -> float:
    producer = broker.producer(acks="all", linger_ms=5)
    value = b"x" * VALUE_CHARS
    started = time.perf_counter()
    for _ in range(records):
        producer.send(topic, value)
    producer.flush()
    elapsed = time.perf_counter() - started
    producer.close()
    return records / elapsed


def time_pages(base: str, paths: dict[str, str]) -> dict[str, dict[str, float]]:
    out = {}
    with httpx.Client(timeout=60) as http:
        http.get(f"{base}/console")  # the session cookie
        for label, path in paths.items():
            samples = []
            for _ in range(PAGE_SAMPLES):
                started = time.perf_counter()
                answer = http.get(f"{base}{path}")
                samples.append(time.perf_counter() - started)
                assert answer.status_code == 200, (path, answer.status_code, answer.text[:200])
            out[label] = _percentiles(samples)
    return out


def render_overview_in_memory(topics: int, groups: int) -> dict[str, float]:
    """The overview's context and template for a sample of ``topics`` × 4 partitions and
    ``groups`` groups, with the monitor's history full."""
    from ray_broker.console.monitor import Monitor, Snapshot
    from ray_broker.console.pages import TEMPLATES, overview_context
    from ray_broker.structs import (
        GroupDescription,
        GroupListing,
        PartitionInfo,
        PartitionLag,
        TopicDescription,
    )

    names = [f"topic-{i:04d}" for i in range(topics)]
    described = {
        n: TopicDescription(
            n,
            n,
            {},
            [PartitionInfo(p, "r0", "node", 0, ["r0"], ["r0"], 0, 1000, 1000) for p in range(4)],
        )
        for n in names
    }
    group_ids = [f"group-{i:03d}" for i in range(groups)]
    group_descriptions = {
        g: GroupDescription(
            g, "Stable", 1, "range", [], [PartitionLag(names[i], 0, 10, 1000, 990, None)]
        )
        for i, g in enumerate(group_ids)
    }
    snapshot = Snapshot(1, 0.0, described, group_descriptions, [])
    monitor = Monitor(lambda: snapshot)
    for _ in range(150):  # a full history: five minutes of samples
        monitor.sample()
        time.sleep(0)

    class SampleLister:
        def list_topics(self) -> list[str]:
            return names

        def list_groups(self) -> list[GroupListing]:
            return [GroupListing(g, "Stable", 1) for g in group_ids]

        def list_share_groups(self) -> list[str]:
            return []

    template = TEMPLATES.env.get_template("overview.html")
    samples = []
    for _ in range(PAGE_SAMPLES):
        started = time.perf_counter()
        context = overview_context(monitor, SampleLister())
        html = template.render(session=None, refresh_ms=2000, **context)
        samples.append(time.perf_counter() - started)
    assert html.count("<tr>") >= topics
    return {**_percentiles(samples), "html_bytes": len(html)}


def run(records: int, topics: int, groups: int, settle_s: float = 5.0) -> dict[str, Any]:
    import ray_broker as rb
    from ray_broker.console import start_console

    result: dict[str, Any] = {"records": records, "topics": topics, "groups": groups}
    with tempfile.TemporaryDirectory(prefix="ray-broker-console-") as data_dir:
        broker = rb.connect(data_dir=data_dir, namespace=f"cb-{uuid.uuid4().hex[:6]}")
        try:
            served = start_console(broker, "127.0.0.1:0")
            base = served["url"].removesuffix("/console")
            cluster = httpx.get(f"{base}/v3/clusters").json()["data"][0]["cluster_id"]
            admin = broker.admin()
            admin.create_topic("api", 4)
            admin.create_topic("native", 4)
            result["native_send_msgs_s"] = round(native_produce(broker, "native", records))
            result["api_produce_msgs_s"] = round(api_produce(base, cluster, "api", records))
            result["api_vs_native"] = round(
                result["api_produce_msgs_s"] / result["native_send_msgs_s"], 3
            )
            for i in range(topics):
                admin.create_topic(f"page-{i:04d}", 1)
            producer = broker.producer()
            for i in range(topics):
                producer.send(f"page-{i:04d}", b"v" * VALUE_CHARS)
            producer.flush()
            for g in range(groups):
                consumer = broker.consumer(
                    f"page-{g % topics:04d}",
                    group_id=f"group-{g:03d}",
                    auto_offset_reset="earliest",
                )
                consumer.poll(1000)
                consumer.commit()
                consumer.close()
            time.sleep(settle_s)  # two monitor rounds
            # What the idle broker itself costs the box (% of all cores) before any page.
            result["idle_cpu_percent"] = psutil.cpu_percent(interval=3.0)
            result["pages"] = time_pages(
                base,
                {
                    "overview": "/console",
                    "overview_fragment": "/console/fragments/overview",
                    "topic": "/console/topics/api",
                    "group": "/console/groups/group-000",
                },
            )
        finally:
            broker.shutdown()
    result["overview_render_1000_topics_100_groups"] = render_overview_in_memory(1_000, 100)
    return result


def print_console(result: dict[str, Any]) -> None:
    print(f"\nHTTP API and console ({result['records']:,} records of {VALUE_CHARS} B)")
    print(f"  API records:batch produce          {result['api_produce_msgs_s']:>12,} msg/s")
    print(f"  native send() (same run)            {result['native_send_msgs_s']:>12,} msg/s")
    print(f"  ratio API / native                  {result['api_vs_native']:>12}")
    print(f"  pages with {result['topics']} topics, {result['groups']} groups (real HTTP):")
    print(f"    machine CPU busy before pages (idle broker) {result['idle_cpu_percent']}%")
    for label, figures in result["pages"].items():
        print(f"    {label:<22} p50 {figures['p50_ms']:>7} ms  p99 {figures['p99_ms']:>7} ms")
    render = result["overview_render_1000_topics_100_groups"]
    print(
        f"  overview render, 1,000 topics × 4 partitions + 100 groups in memory: "
        f"p50 {render['p50_ms']} ms p99 {render['p99_ms']} ms ({render['html_bytes']:,} bytes)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--json-out", type=str)
    args = parser.parse_args()
    run_standalone(
        "console", lambda: run(args.records, args.topics, args.groups), print_console, args.json_out
    )


if __name__ == "__main__":
    main()
