"""One service record per broker namespace: two brokers started on one machine never overwrite
each other's record, and the last one on a Ray decides whether that Ray stops."""

from __future__ import annotations

from pathlib import Path

from ray_broker.service_records import ServiceRecord, others_at, shared_local_ray


def test_records_of_two_namespaces_live_side_by_side(tmp_path: Path) -> None:
    first = ServiceRecord("127.0.0.1:1", "ray_broker", "/d/ray_broker", True, "http://x:8265")
    second = ServiceRecord("127.0.0.1:1", "billing", "/d/billing", True, None)
    first.save(tmp_path)
    second.save(tmp_path)
    assert ServiceRecord.all(tmp_path) == [second, first]  # by namespace
    assert ServiceRecord.load("ray_broker", tmp_path) == first
    assert others_at("127.0.0.1:1", "billing", tmp_path) == [first]
    second.forget(tmp_path)
    assert ServiceRecord.all(tmp_path) == [first]
    assert others_at("127.0.0.1:1", "ray_broker", tmp_path) == []


def test_a_namespace_that_is_no_file_name_still_gets_its_own_record(tmp_path: Path) -> None:
    odd = ServiceRecord("127.0.0.1:1", "../team/a b", "/d", False)
    odd.save(tmp_path)
    [path] = tmp_path.iterdir()
    assert path.parent == tmp_path and "/" not in path.name
    assert ServiceRecord.load("../team/a b", tmp_path) == odd


def test_a_new_namespace_joins_the_ray_start_started(tmp_path: Path) -> None:
    assert shared_local_ray(tmp_path) is None
    ServiceRecord("10.0.0.5:6379", "theirs", "/d", False).save(tmp_path)
    assert shared_local_ray(tmp_path) is None, "a Ray someone else started is not ours to share"
    ServiceRecord("127.0.0.1:7", "ours", "/d", True).save(tmp_path)
    assert shared_local_ray(tmp_path) == "127.0.0.1:7"


def test_an_unreadable_record_counts_as_none(tmp_path: Path) -> None:
    ServiceRecord.path_for("broken", tmp_path).write_text("{not json")
    assert ServiceRecord.load("broken", tmp_path) is None
    assert ServiceRecord.all(tmp_path) == []
