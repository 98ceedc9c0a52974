"""Tiered storage on a fake clock: old sealed segments move to a pyarrow filesystem URI (here a
local directory), reads and recovery use the remote copy, retention deletes it there."""

from __future__ import annotations

from pathlib import Path

import pytest

from ray_broker.errors import InvalidConfig
from ray_broker.storage import Log, LogConfig
from tests.storage.conftest import values_batch

HOUR_MS = 3_600_000


def _remote_config(remote: Path, **extra: object) -> LogConfig:
    return LogConfig(
        **{
            "remote.storage.enable": True,
            "remote.storage.uri": remote.as_uri(),
            "local.retention.ms": HOUR_MS,
            **extra,
        }
    )


def _three_sealed_segments(log: Log, clock) -> None:
    for i in range(3):
        log.append(values_batch(i * 100, 100))
        log.roll()
        clock.advance(HOUR_MS)
    log.seal_pending()


def _tier(log: Log, committed_end: int) -> int:
    moved = 0
    for segment in log.segments_to_tier(committed_end):
        moved += log.install_uploaded(segment, log.upload(segment))
    return moved


def test_old_committed_segments_move_and_are_read_from_remote(tmp_path, clock) -> None:
    remote = tmp_path / "remote"
    directory = tmp_path / "topic" / "partition=0"
    log = Log(directory, _remote_config(remote), clock=clock, remote_path="topic/partition=0/r0")
    _three_sealed_segments(log, clock)
    log.append(values_batch(300, 10))  # the active segment stays local

    # Only segments older than local.retention.ms and below the committed end move: the
    # segments' records are 3, 2 and 1 hours old.
    assert _tier(log, committed_end=150) == 1  # the second (to 200) is not committed yet
    assert _tier(log, committed_end=310) == 1  # the third is not older than an hour...
    clock.advance(1)
    assert _tier(log, committed_end=310) == 1  # ...now it is
    assert sorted(p.name for p in directory.glob("*.parquet")) == []
    stored = sorted(p.name for p in (remote / "topic" / "partition=0" / "r0").glob("*.parquet"))
    assert stored == [f"{base:020d}.parquet" for base in (0, 100, 200)]

    values = log.read(0, 1_000).column("value").to_pylist()
    assert values == [b"v%d" % i for i in range(310)]
    assert log.offset_for_time(0) == 0
    files = log.sealed_files(0, 300)
    assert [f[1] for f in files] == [0, 100, 200] and all("file://" in f[0] for f in files)
    log.close()

    reopened = Log(
        directory, _remote_config(remote), clock=clock, remote_path="topic/partition=0/r0"
    )
    assert reopened.log_start_offset == 0 and reopened.log_end_offset == 310
    assert reopened.read(50, 10).column("value").to_pylist() == [b"v%d" % i for i in range(50, 60)]

    # Retention deletes remote segments too.
    clock.advance(3 * 24 * HOUR_MS)
    assert reopened.apply_retention() == [0, 100, 200]
    assert list((remote / "topic" / "partition=0" / "r0").glob("*.parquet")) == []
    assert reopened.log_start_offset == 300


def test_an_upload_interrupted_before_the_local_delete_recovers_to_the_remote_copy(
    tmp_path, clock
) -> None:
    remote = tmp_path / "remote"
    directory = tmp_path / "p"
    log = Log(directory, _remote_config(remote), clock=clock)
    _three_sealed_segments(log, clock)
    clock.advance(HOUR_MS)
    [first, *_] = log.segments_to_tier(committed_end=300)
    log.upload(first)  # crash here: the remote copy is complete, the local one still there
    log.close()
    reopened = Log(directory, _remote_config(remote), clock=clock)
    assert reopened.recovery.finished_uploads == [f"{0:020d}.parquet"]
    assert not (directory / f"{0:020d}.parquet").exists()
    assert reopened.read(0, 1_000).num_rows == 300


def test_remote_storage_needs_a_uri_and_a_non_compacted_topic(tmp_path) -> None:
    with pytest.raises(ValueError, match="remote.storage.uri"):
        LogConfig(**{"remote.storage.enable": True})
    with pytest.raises(ValueError, match="compacted"):
        LogConfig(
            **{
                "remote.storage.enable": True,
                "remote.storage.uri": tmp_path.as_uri(),
                "cleanup.policy": "compact",
            }
        )
    bad = Log(tmp_path / "x", LogConfig(), remote_path="x")
    bad.config = LogConfig(
        **{"remote.storage.enable": True, "remote.storage.uri": "nosuchscheme://bucket"}
    )
    with pytest.raises(InvalidConfig, match="cannot be opened"):
        bad.remote_tier()
