"""Kafka clients through the Kafka listener, next to the native Python client, same broker,
same run.

    python loadtest/bench_kafka.py [--records 200000]        (bench.py --kafka)

* produce: confluent-kafka (librdkafka) ``produce()`` of 100-byte records, ``linger.ms=5``,
  idempotence off and on, timed to ``flush()``; the native client's ``send()`` of the same
  records (keyed and unkeyed) as the baseline;
* consume: a confluent-kafka consumer reading every record from the earliest offset
  (``poll()``), and the native consumer's ``poll()`` of ``Record``s;
* latency at 1,000 and 200 msg/s: librdkafka with ``linger.ms=0``, ``acks=all`` and
  ``socket.nagle.disable=true`` (librdkafka's default keeps Nagle's algorithm on), records
  paced evenly: produce acknowledgement time and end-to-end time (stamped in the value, read
  back by a consumer polling the topic), p50 and p99.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import tempfile
import threading
import time
import uuid
from typing import Any

from measure import run_standalone  # loadtest/ is this script's directory

PARTITIONS = 4
VALUE_BYTES = 100
LATENCY_RECORDS = 5_000


def _percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=1000)[int(q * 1000) - 1] if len(samples) > 1 else 0.0


def librdkafka_produce(bootstrap: str, topic: str, records: int, idempotent: bool) -> float:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "batch.num.messages": 10_000,
            "enable.idempotence": idempotent,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    value = b"x" * VALUE_BYTES
    started = time.perf_counter()
    for _ in range(records):
        while True:
            try:
                producer.produce(topic, value)
                break
            except BufferError:
                producer.poll(0.001)
    assert producer.flush(120) == 0
    return records / (time.perf_counter() - started)


def librdkafka_consume(bootstrap: str, topic: str, records: int) -> float:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    started = time.perf_counter()
    seen = 0
    while seen < records:
        seen += len([m for m in consumer.consume(10_000, 1.0) if m.error() is None])
    rate = records / (time.perf_counter() - started)
    consumer.close()
    return rate


def native_produce(broker: Any, topic: str, records: int, keyed: bool) -> float:
    value = b"x" * VALUE_BYTES
    with broker.producer(linger_ms=5) as producer:
        started = time.perf_counter()
        for i in range(records):
            producer.send(topic, value=value, key=b"user-%d" % (i % 1000) if keyed else None)
        producer.flush()
        return records / (time.perf_counter() - started)


def native_consume(broker: Any, topic: str, records: int) -> float:
    consumer = broker.consumer(
        topic, group_id=f"n-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest"
    )
    started = time.perf_counter()
    seen = 0
    while seen < records:
        seen += sum(
            len(batch) for batch in consumer.poll(timeout_ms=1_000, max_records=100_000).values()
        )
    consumer.close()
    return records / (time.perf_counter() - started)


def librdkafka_latency(bootstrap: str, topic: str, rate: int = 1_000) -> dict[str, float]:
    """Acknowledgement and end-to-end latency of ``rate`` records per second."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"lat-{rate}",
            "fetch.wait.max.ms": 100,
            "socket.nagle.disable": True,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    end_to_end: list[float] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set() or len(end_to_end) < LATENCY_RECORDS:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                sent = struct.unpack(">d", message.value()[:8])[0]
                end_to_end.append(time.perf_counter() - sent)
            if done.is_set() and len(end_to_end) >= LATENCY_RECORDS:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(1.0)  # the consumer is polling
    # librdkafka leaves Nagle's algorithm on by default; latency-minded users turn it off.
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 0,
            "acks": "all",
            "socket.nagle.disable": True,
        }
    )
    acks: list[float] = []
    started = time.perf_counter()
    for i in range(LATENCY_RECORDS):
        due = started + i / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)  # not a busy loop: the box has two cores to share
        stamp = time.perf_counter()
        producer.produce(
            topic,
            struct.pack(">d", stamp) + b"x" * (VALUE_BYTES - 8),
            partition=0,
            on_delivery=lambda err, msg, s=stamp: acks.append(time.perf_counter() - s),
        )
        producer.poll(0)
    producer.flush(60)
    done.set()
    reader.join(60)
    consumer.close()
    return {
        "ack_p50_ms": round(_percentile(acks, 0.5) * 1000, 2),
        "ack_p99_ms": round(_percentile(acks, 0.99) * 1000, 2),
        "end_to_end_p50_ms": round(_percentile(end_to_end, 0.5) * 1000, 2),
        "end_to_end_p99_ms": round(_percentile(end_to_end, 0.99) * 1000, 2),
        "rate_msgs_s": round(LATENCY_RECORDS / (time.perf_counter() - started)),
    }


def run(records: int) -> dict[str, Any]:
    import ray_broker as rb

    with tempfile.TemporaryDirectory(prefix="ray-broker-kafka-") as data_dir:
        broker = rb.connect(
            data_dir=data_dir,
            namespace=f"kb-{uuid.uuid4().hex[:6]}",
            config={"kafka.listeners": "127.0.0.1:0"},
        )
        try:
            (listener,) = broker.kafka_listeners()
            bootstrap = f"127.0.0.1:{listener['port']}"

            def topic(partitions: int = PARTITIONS) -> str:
                name = f"k-{uuid.uuid4().hex[:6]}"
                broker.admin().create_topic(name, partitions)
                return name

            result: dict[str, Any] = {"records": records, "value_bytes": VALUE_BYTES}
            native_topic = topic()
            result["native_send_msgs_s"] = round(
                native_produce(broker, native_topic, records, False)
            )
            result["native_keyed_send_msgs_s"] = round(
                native_produce(broker, topic(), records, True)
            )
            result["native_poll_msgs_s"] = round(native_consume(broker, native_topic, records))
            kafka_topic = topic()
            result["librdkafka_produce_msgs_s"] = round(
                librdkafka_produce(bootstrap, kafka_topic, records, idempotent=False)
            )
            result["librdkafka_idempotent_produce_msgs_s"] = round(
                librdkafka_produce(bootstrap, topic(), records, idempotent=True)
            )
            result["librdkafka_consume_msgs_s"] = round(
                librdkafka_consume(bootstrap, kafka_topic, records)
            )
            result["latency_at_1k_msgs_per_s"] = librdkafka_latency(bootstrap, topic(1))
            result["latency_at_200_msgs_per_s"] = librdkafka_latency(bootstrap, topic(1), 200)
        finally:
            broker.shutdown()
    return result


def print_kafka(result: dict[str, Any]) -> None:
    print(f"\nKafka protocol listener ({result['records']:,} records of {VALUE_BYTES} B)")
    for name, value in result.items():
        if name.endswith("_msgs_s") and isinstance(value, int):
            print(f"  {name:<40} {value:>12,}")
    for rate in ("1k", "200"):
        latency = result[f"latency_at_{rate}_msgs_per_s"]
        print(
            f"  latency at {rate} msg/s (librdkafka, linger.ms=0, acks=all): ack p50 "
            f"{latency['ack_p50_ms']} ms p99 {latency['ack_p99_ms']} ms; end-to-end p50 "
            f"{latency['end_to_end_p50_ms']} ms p99 {latency['end_to_end_p99_ms']} ms "
            f"(sustained {latency['rate_msgs_s']} msg/s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--json-out", type=str)
    args = parser.parse_args()
    run_standalone("kafka", lambda: run(args.records), print_kafka, args.json_out)


if __name__ == "__main__":
    main()
