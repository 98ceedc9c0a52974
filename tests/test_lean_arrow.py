"""The broker's actors run without pandas in memory, and pyarrow still converts everything."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pyarrow as pa
import ray

PROBE_THEN_WORK = """
import sys
from ray_broker.actors.lean_arrow import skip_pandas_probe
skip_pandas_probe()
import pyarrow as pa, pyarrow.compute as pc
table = pa.table({"key": [b"a", None], "n": [1, 2], "s": ["x", "y"]})
assert pc.sum(table["n"]).as_py() == 3 and table.to_pylist()[1]["key"] is None
assert "pandas" not in sys.modules, "a list conversion imported pandas"
frame = table.to_pandas()  # pandas still comes when it is asked for
assert list(frame["n"]) == [1, 2]
assert pa.array(frame["n"]).to_pylist() == [1, 2]
assert pa.Table.from_pandas(frame).num_rows == 2
print("ok")
"""


def test_the_probe_keeps_pandas_out_and_to_pandas_still_works():
    done = subprocess.run(
        [sys.executable, "-c", PROBE_THEN_WORK], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_partition_and_controller_actors_serve_without_importing_pandas(shared_broker):
    topic = f"lean-{uuid.uuid4().hex[:8]}"
    shared_broker.admin().create_topic(topic, partitions=1)
    producer = shared_broker.producer()
    producer.send_batch(topic, pa.table({"key": [b"k"] * 10, "value": [b"v"] * 10})).result(
        timeout=60
    )
    consumer = shared_broker.consumer(
        topic, group_id=f"g-{uuid.uuid4().hex[:6]}", auto_offset_reset="earliest"
    )
    seen = 0
    for _ in range(300):
        seen += sum(len(batch) for batch in consumer.poll(timeout_ms=200).values())
        if seen >= 10:
            break
    consumer.close()
    assert seen == 10
    leader = shared_broker._metadata.topic(topic).leader(0)
    loaded = ray.get(leader.__ray_call__.remote(lambda actor: "pandas" in sys.modules))
    assert loaded is False
    controller = shared_broker._controller
    assert ray.get(controller.__ray_call__.remote(lambda actor: "pandas" in sys.modules)) is False
