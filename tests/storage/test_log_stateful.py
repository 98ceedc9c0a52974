"""Hypothesis runs append/roll/seal/read/truncate/retention/reopen against a plain list."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ray_broker.errors import OffsetOutOfRange
from ray_broker.storage import Log, LogConfig
from tests.storage.conftest import FakeClock

CONFIG = LogConfig(segment_bytes=2048, retention_ms=10_000, segment_row_group_records=7)


class LogMachine(RuleBasedStateMachine):
    """Model: ``values[i]`` is the value at offset ``i``; offsets below ``start`` are deleted."""

    @initialize()
    def open_log(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="logmachine-"))
        self.clock = FakeClock()
        self.log = Log(self.tmp / "p", CONFIG, clock=self.clock)
        self.values: list[bytes] = []
        self.start = 0
        self.counter = 0

    def teardown(self) -> None:
        if hasattr(self, "log"):
            self.log.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    @rule(count=st.integers(1, 40), size=st.integers(0, 60))
    def append(self, count: int, size: int) -> None:
        batch = [b"%d:" % (self.counter + i) + b"x" * size for i in range(count)]
        self.counter += count
        base, last = self.log.append(pa.table({"value": batch}))
        assert (base, last) == (len(self.values), len(self.values) + count - 1)
        self.values.extend(batch)

    @rule()
    def roll(self) -> None:
        self.log.roll()

    @rule()
    def seal(self) -> None:
        self.log.seal_pending()

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.start, len(self.values)))
        max_records = data.draw(st.integers(1, 100))
        table = self.log.read(offset, max_records)
        expected = self.values[offset : offset + max_records]
        got = table.column("value").to_pylist()
        assert got == expected[: len(got)]
        assert len(got) == min(len(expected), max_records)
        assert table.column("offset").to_pylist() == list(range(offset, offset + len(got)))

    @rule(data=st.data())
    def read_out_of_range(self, data: st.DataObject) -> None:
        offset = data.draw(
            st.one_of(
                st.integers(len(self.values) + 1, len(self.values) + 50),
                st.integers(-50, self.start - 1),
            )
        )
        with pytest.raises(OffsetOutOfRange):
            self.log.read(offset)

    @precondition(lambda self: len(self.values) > self.start)
    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(max(self.start, len(self.values) - 60), len(self.values)))
        self.log.truncate_to(offset)
        del self.values[offset:]

    @rule(ms=st.integers(0, 15_000))
    def retention(self, ms: int) -> None:
        self.clock.advance(ms)
        bases = self.log.segment_bases()
        memory_start = self.log.active_base_offset
        deleted = self.log.apply_retention()
        assert all(base in bases for base in deleted)
        assert self.log.log_start_offset >= self.start
        assert self.log.log_start_offset <= memory_start or not deleted
        self.start = self.log.log_start_offset

    @rule()
    def reopen(self) -> None:
        before = (self.log.log_start_offset, self.log.log_end_offset, self.log.segment_bases())
        self.log.close()
        self.log = Log(self.tmp / "p", CONFIG, clock=self.clock)
        assert self.log.recovery.cut_tails == []
        assert (self.log.log_start_offset, self.log.log_end_offset) == before[:2]

    @invariant()
    def offsets_match_the_model(self) -> None:
        if not hasattr(self, "log"):
            return
        assert self.log.log_end_offset == len(self.values)
        assert self.log.log_start_offset == self.start
        bases = self.log.segment_bases()
        assert bases == sorted(bases) and len(set(bases)) == len(bases)


LogMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_log_behaves_like_a_list = LogMachine.TestCase
