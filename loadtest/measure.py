"""Pacing, percentiles, reading and broker set-up shared by the benchmarks (one definition, so
every figure is measured the same way)."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def machine() -> str:
    """Where a figure was measured; every JSON row of the benchmarks carries it."""
    return f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"


def run_standalone(
    figure: str,
    run: Callable[[], dict[str, Any]],
    report: Callable[[dict[str, Any]], None],
    json_out: str | None,
    *,
    attach: bool = True,
) -> dict[str, Any]:
    """A ``bench_*.py`` script run on its own: attach to (or start) Ray unless ``attach`` is
    False (the figure starts its own), measure, print, and append the figures as one JSON row
    to ``json_out``."""
    from ray_broker.runtime import ensure_ray

    if attach:
        ensure_ray()
    result = run()
    report(result)
    if json_out:
        with open(json_out, "a") as out:
            out.write(json.dumps({"figure": figure, **result, "machine": machine()}) + "\n")
    return result


def pace(send: Callable[[], Any], rate: int, seconds: float) -> int:
    """Call ``send`` ``rate`` times a second for ``seconds``, in 1 ms ticks; returns calls made."""
    tick = 0.001
    start = time.perf_counter()
    sent = 0
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(elapsed * rate) + 1
        while sent < due:
            send()
            sent += 1
        time.sleep(tick)
    return sent


def percentile_ms(samples_ns: Sequence[int], q: float) -> float:
    return float(np.percentile(np.array(samples_ns), q)) / 1e6 if len(samples_ns) else float("nan")


def warm(samples: list[int]) -> list[int]:
    """Drop the first tenth: connection set-up and first-call code paths, not steady state."""
    return samples[len(samples) // 10 :]


def read_all(
    consumer: Any, total: int, progress: Any = None, task: Any = None
) -> tuple[int, float]:
    """Read up to ``total`` records with ``poll_arrow`` (stopping at 5 s without one); returns
    the records read and the seconds it took. ``progress``/``task``: a rich bar to advance."""
    read = 0
    started = time.perf_counter()
    while read < total:
        got = consumer.poll_arrow(timeout_ms=5_000, max_records=400_000).num_rows
        if not got:
            break
        read += got
        if progress is not None:
            progress.advance(task, got)
    return read, time.perf_counter() - started


def on_fresh_broker(label: str, run: Callable[[Any], T]) -> T:
    """``run(broker)`` on a broker of its own (a temporary data directory, its own namespace),
    shut down afterwards: how each stand-alone benchmark script starts."""
    import ray_broker as rb

    with tempfile.TemporaryDirectory(prefix=f"ray-broker-{label}-") as data_dir:
        broker = rb.connect(data_dir=data_dir, namespace=f"{label}-{uuid.uuid4().hex[:6]}")
        try:
            return run(broker)
        finally:
            broker.shutdown()
