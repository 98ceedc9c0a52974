from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from ray_broker.storage import Log, LogConfig


class FakeClock:
    """Milliseconds that only move when a test says so."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


def values_batch(start: int, count: int, *, keys: bool = False) -> pa.Table:
    """``count`` records with values ``v<start>``… (and keys ``k<i % 7>`` when asked)."""
    columns = {"value": [b"v%d" % i for i in range(start, start + count)]}
    if keys:
        columns["key"] = [b"k%d" % (i % 7) for i in range(start, start + count)]
    return pa.table(columns)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_log(tmp_path: Path, clock: FakeClock) -> Callable[..., Log]:
    directory = tmp_path / "topic" / "partition=0"

    def make(**config: object) -> Log:
        return Log(directory, LogConfig(**config), clock=clock)

    return make
