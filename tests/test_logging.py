"""Log shipping on a real broker: records from four processes (Ray tasks among them) arrive
complete and in order per process; a broker outage loses nothing within the buffer and
reports what it dropped beyond it; ``ray-broker tail`` shows new records within a second;
DuckDB counts errors per service per minute over the Parquet segments."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

import ray_broker as rb
from ray_broker.logging import BrokerHandler
from ray_broker.structs import TopicPartition

ROOT = Path(__file__).resolve().parents[1]


def read_all(broker, topic: str, expected: int, timeout_s: float = 60.0) -> list:
    consumer = broker.consumer(auto_offset_reset="earliest")
    count = len(consumer.partitions_for_topic(topic))
    consumer.assign([TopicPartition(topic, p) for p in range(count)])
    records, deadline = [], time.monotonic() + timeout_s
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(500, max_records=100_000).values():
            records += batch
    consumer.close()
    return records


def logger_with(handler: logging.Handler, name: str) -> logging.Logger:
    found = logging.getLogger(name)
    found.handlers[:] = [handler]
    found.setLevel(logging.DEBUG)
    found.propagate = False
    return found


JOB = """
import logging, os, sys
import ray
from ray_broker.logging import runtime_env

address, namespace, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
ray.init(address=address, runtime_env=runtime_env("app-logs", namespace=namespace, service="job"),
         log_to_driver=False)

@ray.remote(num_cpus=0.5)
def work(count):
    import ray_broker.logging as shipping
    log = logging.getLogger("work")
    for i in range(count):
        log.info("step %d of %d", i, count)
    assert shipping._installed is not None and shipping._installed.flush(120)
    return os.getpid()

pids = ray.get([work.remote(count) for _ in range(2)])
print(" ".join(map(str, pids)), flush=True)
"""


def test_records_from_four_processes_arrive_complete_and_in_order_per_process(broker, tmp_path):
    """The test process and a second driver log directly; the second driver's job runs two
    Ray tasks whose workers ship through the job's ``runtime_env`` — 100,000 records."""
    import ray

    topic = "app-logs"
    per_process = 25_000
    handler = BrokerHandler(topic, broker=broker, service="driver")
    script = tmp_path / "job.py"
    script.write_text(JOB)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    if (Path.home() / ".ray" / "auth_token").exists():
        env["RAY_AUTH_MODE"] = "token"
    job = subprocess.Popen(
        [
            sys.executable,
            str(script),
            ray.get_runtime_context().gcs_address,
            broker.namespace,
            str(per_process),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    second = subprocess.Popen(
        [sys.executable, "-c", SECOND_DRIVER, broker.namespace, str(per_process)],
        env={**env, "RAY_ADDRESS": ray.get_runtime_context().gcs_address},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    log = logger_with(handler, "driver")
    for i in range(per_process):
        log.info("step %d of %d", i, per_process)
    assert handler.flush(60)
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0, err[-3000:]
    out2, err2 = second.communicate(timeout=300)
    assert second.returncode == 0, err2[-3000:]
    pids = {int(p) for p in out.split()} | {int(out2.strip()), os.getpid()}
    assert len(pids) == 4
    records = read_all(broker, topic, 4 * per_process)
    by_process: dict[int, list[dict]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        document = json.loads(record.value)
        by_process[document["pid"]].append(document)
    assert set(by_process) == pids
    for pid, documents in by_process.items():
        assert [d["seq"] for d in documents] == list(range(per_process)), pid
        assert documents[-1]["message"] == f"step {per_process - 1} of {per_process}"
    workers = [docs[0] for docs in by_process.values() if docs[0]["service"] == "job"]
    assert len(workers) == 2 and all(d["ray"]["task_id"] for d in workers)
    assert by_process[os.getpid()][0]["service"] == "driver"
    assert handler.dropped == 0
    handler.close()


SECOND_DRIVER = """
import logging, os, sys
import ray_broker as rb
from ray_broker.logging import install

handler = install("app-logs", service="cron", broker=rb.connect(namespace=sys.argv[1]))
log = logging.getLogger("cron")
for i in range(int(sys.argv[2])):
    log.info("step %d of %s", i, sys.argv[2])
print(os.getpid(), flush=True)
"""  # no flush: logging.shutdown at exit delivers the rest


def test_a_broker_outage_loses_nothing_within_the_buffer_and_reports_the_rest(
    ray_session, tmp_path, capfd
):
    namespace = f"outage-{uuid.uuid4().hex[:6]}"
    data_dir = tmp_path / "data"
    broker = rb.connect(data_dir=data_dir, namespace=namespace)
    handler = BrokerHandler("outage-logs", broker=broker, service="shop", buffer_records=2_000)
    log = logger_with(handler, "shop")
    for i in range(500):
        log.warning("before %d", i)
    assert handler.flush(30)
    broker.shutdown()  # the whole broker goes away
    started = time.perf_counter()
    for i in range(3_000):
        log.warning("during %d", i)
    took = time.perf_counter() - started
    assert took < 2.0, f"logging blocked while the broker was away: {took:.2f} s"
    assert handler.dropped == 1_000
    assert "dropping records" in capfd.readouterr().err
    time.sleep(1)
    back = rb.connect(data_dir=data_dir, namespace=namespace)
    assert handler.flush(90), handler.last_error
    records = read_all(back, "outage-logs", 2_501)
    documents = [json.loads(r.value) for r in sorted(records, key=lambda r: r.offset)]
    kept = [d for d in documents if d["logger"] == "shop"]
    # Nothing acknowledged or buffered is lost; a batch resent after a timeout may repeat.
    seqs = sorted({d["seq"] for d in kept})
    assert seqs == list(range(2_500))
    assert [d["message"] for d in kept][-1] == "during 1999"
    [report] = [d for d in documents if d["logger"] == "ray_broker.logging"]
    assert report["level"] == "WARNING" and report["extra"]["dropped"] == 1_000
    handler.close()
    back.shutdown()


def test_tail_shows_new_records_within_a_second(broker):
    import ray

    topic = "tail-logs"
    handler = BrokerHandler(topic, broker=broker, service="api")
    log = logger_with(handler, "api")
    log.info("old news")
    assert handler.flush(30)
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    tail = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ray_broker",
            "--namespace",
            broker.namespace,
            "--output",
            "json",
            "tail",
            topic,
            "-n",
            "6",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        while "following" not in (said := tail.stderr.readline()):  # Ray's own lines first
            assert said, "tail exited before following the topic"
        delays = []
        for i in range(5):
            log.error("request %d failed", i)
            assert handler.flush(30)
            acknowledged = time.monotonic()
            shown = json.loads(tail.stdout.readline())
            delays.append(time.monotonic() - acknowledged)
            assert shown["message"] == f"request {i} failed" and shown["level"] == "ERROR"
        assert sorted(delays)[2] < 1.0, delays  # the median of five
        since = subprocess.run(
            [
                sys.executable,
                "-m",
                "ray_broker",
                "--namespace",
                broker.namespace,
                "tail",
                topic,
                "--since",
                "10m",
                "-n",
                "6",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert since.returncode == 0, since.stderr
        assert "old news" in since.stdout and "request 4 failed" in since.stdout
        assert "ERROR" in since.stdout and "api" in since.stdout
    finally:
        tail.kill()
        handler.close()


def test_a_missing_topic_is_made_or_refused_and_a_bad_name_is_refused_at_creation(broker):
    from ray_broker.errors import InvalidTopicName, TopicNotFound

    with pytest.raises(TopicNotFound):
        BrokerHandler("nowhere", broker=broker, create_topic=False)
    with pytest.raises(InvalidTopicName):
        BrokerHandler("bad name!", broker=broker)
    handler = BrokerHandler("made-on-demand", broker=broker)
    assert broker.admin().describe_topic("made-on-demand").config["retention.ms"] == 259_200_000
    handler.close()


def test_duckdb_counts_errors_per_service_per_minute_over_the_parquet_segments(broker):
    duckdb = pytest.importorskip("duckdb")
    topic = "sealed-logs"
    broker.admin().create_topic(topic, 1, config={"segment.bytes": 64 * 1024})
    handlers = {s: BrokerHandler(topic, broker=broker, service=s) for s in ("cart", "pay")}
    for service, handler in handlers.items():
        log = logger_with(handler, f"svc.{service}")
        for i in range(1_000):
            (log.error if i % 10 == 0 else log.info)("event %d %s", i, "x" * 100)
        assert handler.flush(30)
    partition_dir = broker.data_dir / topic / "partition=0"
    deadline = time.monotonic() + 60
    while len(list(partition_dir.glob("*.parquet"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    files = sorted(partition_dir.glob("*.parquet"))
    assert files, "no segment was sealed"
    query = f"""
        SELECT json_extract_string(decode(value), '$.service') AS service,
               date_trunc('minute', to_timestamp(timestamp / 1000)) AS minute,
               count(*) AS errors
        FROM read_parquet('{partition_dir}/*.parquet')
        WHERE json_extract_string(decode(value), '$.level') = 'ERROR'
        GROUP BY ALL ORDER BY minute, service
    """
    rows = duckdb.sql(query).fetchall()
    sealed = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{partition_dir}/*.parquet')"
    ).fetchall()[0][0]
    assert rows and {r[0] for r in rows} <= {"cart", "pay"}
    assert 0 < sum(r[2] for r in rows) <= 200 and sealed > 0
    for handler in handlers.values():
        handler.close()


def test_a_record_json_cannot_hold_ships_and_does_not_stop_the_ones_after_it(broker):
    handler = BrokerHandler("odd-logs", broker=broker, service="odd")
    log = logger_with(handler, "odd.app")
    loop: dict = {}
    loop["self"] = loop
    log.info("cyclic", extra={"ctx": loop})
    log.info("tuple keys", extra={"ctx": {(1, 2): 3}})
    log.info("after them")
    assert handler.flush(timeout_s=60)
    handler.close()
    shipped = [json.loads(r.value) for r in read_all(broker, "odd-logs", 3)]
    assert [d["message"] for d in shipped] == ["cyclic", "tuple keys", "after them"]
    assert shipped[0]["extra"]["ctx"] == "{'self': {...}}"
