"""The heap a broker client or actor has loaded is frozen, so full collections do not scan it
(the cause of a 60–90 ms pause that was the end-to-end p99; see ray_broker/gc_pause.py)."""

from __future__ import annotations

import gc
import uuid

import ray


def test_a_connected_client_and_its_partition_actors_have_frozen_their_loaded_heap(broker):
    assert gc.get_freeze_count() > 50_000, "the client's loaded heap was not frozen"
    name = f"gc-{uuid.uuid4().hex[:6]}"
    broker.admin().create_topic(name, partitions=1)
    leader = broker._metadata.topic(name).leader(0)
    info = ray.get(leader.info.remote(), timeout=30)
    assert info["gc_frozen"] > 50_000, "the partition actor's loaded heap was not frozen"


def test_freezing_is_once_per_process():
    from ray_broker.gc_pause import freeze_loaded_heap

    freeze_loaded_heap()
    before = gc.get_freeze_count()
    garbage = [[] for _ in range(1_000)]
    freeze_loaded_heap()
    assert gc.get_freeze_count() == before, "a second freeze froze objects made since"
    del garbage
