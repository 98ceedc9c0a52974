"""Crash recovery: torn and corrupt write-ahead tails, interrupted seals, corrupt segments."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ray_broker.errors import CorruptSegment
from ray_broker.storage import Log, LogConfig
from ray_broker.storage.wal import HEADER_BYTES
from tests.storage.conftest import values_batch

FIXTURE_PER_TEST = HealthCheck.function_scoped_fixture
BATCHES = 6
PER_BATCH = 25


def _write_batches(directory) -> list[int]:
    """Append BATCHES batches; return the WAL size after each (frame boundaries)."""
    log = Log(directory, LogConfig())
    ends = []
    for i in range(BATCHES):
        log.append(values_batch(i * PER_BATCH, PER_BATCH))
        ends.append(log.size_bytes)
    log.close()
    return ends


def _wal(directory):
    (wal,) = directory.glob("*.wal")
    return wal


def test_reopen_returns_the_same_log(tmp_path):
    directory = tmp_path / "p"
    _write_batches(directory)
    log = Log(directory)
    assert log.log_end_offset == BATCHES * PER_BATCH
    assert log.recovery.records_recovered_from_wal == BATCHES * PER_BATCH
    assert log.recovery.cut_tails == []
    values = log.read(0, 10_000).column("value").to_pylist()
    assert values == [b"v%d" % i for i in range(BATCHES * PER_BATCH)]


@settings(max_examples=60, deadline=None, suppress_health_check=[FIXTURE_PER_TEST])
@given(data=st.data())
def test_torn_tail_keeps_every_whole_batch_before_the_damage(tmp_path_factory, data):
    directory = tmp_path_factory.mktemp("torn") / "p"
    ends = _write_batches(directory)
    wal = _wal(directory)
    cut_at = data.draw(st.integers(0, ends[-1] - 1), label="truncate at byte")
    os.truncate(wal, cut_at)
    log = Log(directory)
    whole = sum(1 for end in ends if end <= cut_at)
    assert log.log_end_offset == whole * PER_BATCH
    assert log.read(0, 10_000).column("value").to_pylist() == [
        b"v%d" % i for i in range(whole * PER_BATCH)
    ]
    expected_cut = cut_at - (ends[whole - 1] if whole else 0)
    assert log.recovery.bytes_cut == expected_cut
    assert (len(log.recovery.cut_tails) == 1) == (expected_cut > 0)
    # The log keeps working after the cut, and a second reopen finds nothing more to cut.
    log.append(values_batch(10_000, 1))
    log.close()
    again = Log(directory)
    assert again.recovery.cut_tails == []
    assert again.log_end_offset == whole * PER_BATCH + 1


@settings(max_examples=60, deadline=None, suppress_health_check=[FIXTURE_PER_TEST])
@given(data=st.data())
def test_corrupt_byte_cuts_from_the_damaged_batch_on(tmp_path_factory, data):
    directory = tmp_path_factory.mktemp("flip") / "p"
    ends = _write_batches(directory)
    wal = _wal(directory)
    position = data.draw(st.integers(0, ends[-1] - 1), label="corrupt byte")
    raw = bytearray(wal.read_bytes())
    raw[position] ^= 0xFF
    wal.write_bytes(bytes(raw))
    log = Log(directory)
    damaged_batch = next(i for i, end in enumerate(ends) if position < end)
    assert log.log_end_offset == damaged_batch * PER_BATCH
    assert log.recovery.cut_tails and log.recovery.cut_tails[0].file == wal.name
    assert log.recovery.bytes_cut == ends[-1] - (ends[damaged_batch - 1] if damaged_batch else 0)


def test_problem_is_reported_by_kind(tmp_path):
    directory = tmp_path / "p"
    ends = _write_batches(directory)
    os.truncate(_wal(directory), ends[0] + HEADER_BYTES - 2)
    assert "partial frame header" in Log(directory).recovery.cut_tails[0].problem


def test_seal_interrupted_after_parquet_rename_keeps_no_duplicate(tmp_path):
    directory = tmp_path / "p"
    log = Log(directory)
    log.append(values_batch(0, 100))
    log.roll()
    segment = log.next_segment_to_seal()
    log.write_sealed(segment)  # crash here: Parquet is in place, the WAL was not deleted
    log.append(values_batch(100, 10))
    log.close()
    assert len(list(directory.glob("*.wal"))) == 2
    reopened = Log(directory)
    assert reopened.recovery.finished_seals == ["_00000000000000000000.wal"]
    assert reopened.read(0, 1000).column("value").to_pylist() == [b"v%d" % i for i in range(110)]


def test_seal_interrupted_before_parquet_rename_keeps_no_loss(tmp_path):
    directory = tmp_path / "p"
    log = Log(directory)
    log.append(values_batch(0, 100))
    log.roll()
    log.close()
    (directory / "_00000000000000000000.parquet.tmp").write_bytes(b"half a parquet file")
    reopened = Log(directory)
    assert reopened.recovery.removed_temp_files == ["_00000000000000000000.parquet.tmp"]
    assert reopened.log_end_offset == 100
    assert reopened.seal_pending() == 1  # the rolled segment is sealed on the next chance
    assert reopened.read(0, 1000).num_rows == 100


def test_corrupt_sealed_segment_raises_naming_the_file(tmp_path):
    directory = tmp_path / "p"
    log = Log(directory)
    log.append(values_batch(0, 100))
    log.roll()
    log.seal_pending()
    log.close()
    segment = directory / "00000000000000000000.parquet"
    segment.write_bytes(segment.read_bytes()[:-20])
    with pytest.raises(CorruptSegment, match="00000000000000000000.parquet"):
        Log(directory)


def test_a_gap_cuts_the_log_after_it_and_keeps_the_cut_files(tmp_path):
    """A missing segment (or a rolled WAL that lost its tail in a power loss) used to stop the
    partition for good; now the log serves everything before the gap, as Kafka truncates after
    the first damaged segment, and the files after it are renamed ``*.cut`` and reported."""
    directory = tmp_path / "p"
    log = Log(directory, LogConfig(segment_bytes=4096))
    for start in range(0, 600, 50):
        log.append(values_batch(start, 50))
    log.seal_pending()
    log.close()
    sealed = sorted(directory.glob("*.parquet"))
    assert len(sealed) >= 3
    gap_start = int(sealed[1].name[:20])
    sealed[1].unlink()
    reopened = Log(directory)
    assert reopened.log_end_offset == gap_start
    assert reopened.recovery.cut_segments and all(
        (directory / (name + ".cut")).exists() for name in reopened.recovery.cut_segments
    )
    reopened.append(values_batch(gap_start, 10))  # and it takes writes again
    reopened.close()
    assert Log(directory).log_end_offset == gap_start + 10


def test_a_rolled_wal_that_lost_its_tail_does_not_stop_the_log(tmp_path):
    directory = tmp_path / "p"
    log = Log(directory, LogConfig(segment_bytes=1024 * 1024))
    for start in range(0, 100, 10):
        log.append(values_batch(start, 10))
    log.roll()
    log.append(values_batch(100, 100))
    log.close()
    first_wal = sorted(directory.glob("_*.wal"))[0]
    first_wal.write_bytes(first_wal.read_bytes()[: first_wal.stat().st_size // 2])
    reopened = Log(directory)
    assert 0 < reopened.log_end_offset < 100
    assert reopened.recovery.cut_tails and reopened.recovery.cut_segments


def test_stray_files_are_ignored_and_named(tmp_path):
    directory = tmp_path / "p"
    log = Log(directory)
    log.append(values_batch(0, 10))
    log.close()
    for name in ("export.parquet", "backup.wal", "99.parquet", "_notes.wal"):
        (directory / name).write_bytes(b"not mine")
    reopened = Log(directory)
    assert reopened.log_end_offset == 10
    assert sorted(reopened.recovery.ignored_files) == sorted(
        ["export.parquet", "backup.wal", "99.parquet", "_notes.wal"]
    )
    assert (directory / "export.parquet").read_bytes() == b"not mine"
