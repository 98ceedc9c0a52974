"""The metadata/offsets store stays small however often a key is written, and its snapshot
swap survives a crash at any step (no Ray)."""

from __future__ import annotations

import shutil

from ray_broker.actors import metadata_store
from ray_broker.actors.metadata_store import MetadataStore


def test_a_key_written_thousands_of_times_leaves_a_bounded_number_of_files(tmp_path, monkeypatch):
    monkeypatch.setattr(metadata_store, "COMPACT_EVERY_WRITES", 50)
    store = MetadataStore(tmp_path / "offsets")
    for i in range(2_000):
        store.put_many({"g/t/0": {"offset": i}, f"other-{i % 3}": {"offset": i}})
    files = [p for p in (tmp_path / "offsets").iterdir() if p.suffix in (".parquet", ".wal")]
    assert len(files) <= metadata_store.SNAPSHOT_SEGMENTS + 2
    assert store.load()["g/t/0"] == {"offset": 1_999}
    store.close()
    reopened = MetadataStore(tmp_path / "offsets")
    assert reopened.load()["g/t/0"] == {"offset": 1_999}
    assert reopened.load()["other-2"] == {"offset": 1_997}
    reopened.close()


def test_an_interrupted_snapshot_swap_is_finished_or_discarded(tmp_path):
    store = MetadataStore(tmp_path / "m")
    store.put("k", {"v": 1})
    store.close()
    # Crash after the old log was retired, before the snapshot took its place.
    shutil.copytree(tmp_path / "m", tmp_path / "m.snapshot")
    (tmp_path / "m").rename(tmp_path / "m.retired")
    assert MetadataStore(tmp_path / "m").load() == {"k": {"v": 1}}
    assert not (tmp_path / "m.retired").exists() and not (tmp_path / "m.snapshot").exists()
    # Crash while the snapshot was being written: the old log is whole; the partial one goes.
    (tmp_path / "m.snapshot").mkdir()
    (tmp_path / "m.snapshot" / "_00000000000000000000.wal").write_bytes(b"partial")
    assert MetadataStore(tmp_path / "m").load() == {"k": {"v": 1}}
    assert not (tmp_path / "m.snapshot").exists()


def test_one_broker_per_data_directory(tmp_path):
    import pytest

    from ray_broker.actors.data_dir import DataDirLock
    from ray_broker.errors import DataDirInUse

    first = DataDirLock(tmp_path, "alpha")
    with pytest.raises(DataDirInUse, match="alpha"):
        DataDirLock(tmp_path, "beta")
    first.release()
    DataDirLock(tmp_path, "beta").release()
