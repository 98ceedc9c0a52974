"""Throughput with authentication and ACL checks on, against the same broker code with security
off, measured in the same run.

    python loadtest/bench_security.py [--records 2000000] [--keyed 200000]   (bench.py --security)

Each mode gets a fresh broker. With security on, the client is an ordinary user (not a
superuser) holding write/read ACLs on the topic and read on the group, so every produce and
fetch goes through token verification and the ACL decision at the partition actor. Figures:

* batched produce: ``send_batch`` of 10,000-record Arrow tables (100-byte values);
* keyed ``send()``: one call per record with a key, ``linger.ms=5`` (what applications write);
* consume: a consumer-group member reading every record with ``poll_arrow()``.

The runs alternate off, on, off, on and keep each mode's best, so a warm-up or a noisy
neighbour does not land on one side only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from typing import Any

import pyarrow as pa
from measure import run_standalone  # loadtest/ is this script's directory

PARTITIONS = 4
CHUNK = 10_000
VALUE_BYTES = 100
ROUNDS = 2


def _broker(data_dir: str, secured: bool) -> tuple[Any, Any]:
    """(the client's broker, the admin's) for a fresh broker in ``data_dir``."""
    import ray_broker as rb

    namespace = f"sec-{uuid.uuid4().hex[:6]}"
    if not secured:
        broker = rb.connect(data_dir=data_dir, namespace=namespace)
        return broker, broker
    root = rb.connect(
        data_dir=data_dir,
        namespace=namespace,
        config={"security.enabled": True},
        username="root",
        password="root-pw",
    )
    root.admin().create_user("app", "app-pw")
    client = rb.connect(namespace=namespace, username="app", password="app-pw")
    return client, root


def _grant(admin_broker: Any, topic: str, group: str) -> None:
    import ray_broker as rb

    if admin_broker is None:
        return
    admin_broker.admin().create_acls(
        [
            rb.Acl("User:app", "topic", topic, "write"),
            rb.Acl("User:app", "topic", topic, "read"),
            rb.Acl("User:app", "group", group, "read"),
        ]
    )


def measure(secured: bool, records: int, keyed: int) -> dict[str, float]:
    from ray_broker.demo import random_values

    with tempfile.TemporaryDirectory(prefix="ray-broker-security-") as data_dir:
        client, root = _broker(data_dir, secured)
        try:
            topic, group = f"s-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
            root.admin().create_topic(topic, partitions=PARTITIONS)
            _grant(root if secured else None, topic, group)
            chunk = pa.table({"value": random_values(CHUNK, VALUE_BYTES)})
            with client.producer() as producer:
                started = time.perf_counter()
                futures = [
                    producer.send_batch(topic, chunk.slice(0, min(CHUNK, records - start)))
                    for start in range(0, records, CHUNK)
                ]
                producer.flush()
                for future in futures:
                    future.result()
                batched_s = time.perf_counter() - started
            value = b"x" * VALUE_BYTES
            with client.producer(linger_ms=5) as producer:
                started = time.perf_counter()
                last = None
                for i in range(keyed):
                    last = producer.send(topic, value=value, key=b"user-%d" % (i % 1000))
                producer.flush()
                if last is not None:
                    last.result()
                keyed_s = time.perf_counter() - started
            total = records + keyed
            consumer = client.consumer(topic, group_id=group, auto_offset_reset="earliest")
            started = time.perf_counter()
            seen = 0
            while seen < total:
                seen += consumer.poll_arrow(timeout_ms=1_000, max_records=400_000).num_rows
            consume_s = time.perf_counter() - started
            consumer.close()
        finally:
            if client is not root:
                client.close()
            root.shutdown()
    return {
        "batched_produce_msgs_s": records / batched_s,
        "keyed_send_msgs_s": keyed / keyed_s,
        "consume_msgs_s": total / consume_s,
    }


def run(records: int, keyed: int) -> dict[str, Any]:
    best: dict[str, dict[str, float]] = {"off": {}, "on": {}}
    for _ in range(ROUNDS):
        for mode in ("off", "on"):
            figures = measure(mode == "on", records, keyed)
            for name, value in figures.items():
                best[mode][name] = max(best[mode].get(name, 0.0), value)
    result: dict[str, Any] = {"records": records, "keyed": keyed}
    for name in best["off"]:
        result[f"{name}_off"] = round(best["off"][name])
        result[f"{name}_on"] = round(best["on"][name])
        result[f"{name}_ratio"] = round(best["on"][name] / best["off"][name], 3)
    return result


def print_security(result: dict[str, Any]) -> None:
    print(
        f"\nsecurity on vs off ({result['records']:,} batched + {result['keyed']:,} keyed records)"
    )
    for name in ("batched_produce_msgs_s", "keyed_send_msgs_s", "consume_msgs_s"):
        print(
            f"  {name:<24} off {result[f'{name}_off']:>12,}  on {result[f'{name}_on']:>12,}"
            f"  on/off {result[f'{name}_ratio']:.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--keyed", type=int, default=200_000)
    parser.add_argument("--json-out", type=str)
    args = parser.parse_args()
    run_standalone("security", lambda: run(args.records, args.keyed), print_security, args.json_out)


if __name__ == "__main__":
    main()
