"""Counters sampled over time, and the rates and series the console's charts draw.

A plain class: the monitor adds a sample every few seconds; tests add samples on a fake
timeline. A counter that goes down (a topic deleted and made again, a group's offsets reset)
counts as a new start, never as a negative rate.
"""

from __future__ import annotations

import threading
from collections import deque

KEEP_SAMPLES = 150  # five minutes at the monitor's two-second pace


class History:
    def __init__(self, keep: int = KEEP_SAMPLES) -> None:
        self._samples: deque[tuple[float, dict[str, float]]] = deque(maxlen=keep)
        # Per sample, the sum of every counter of a prefix ("in", "out"): the overview of
        # someone who may see every topic draws these instead of summing a thousand counters.
        self._totals: deque[dict[str, float]] = deque(maxlen=keep)
        self._latest_names: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()

    def add(self, at_s: float, values: dict[str, float]) -> None:
        with self._lock:
            if self._samples and at_s <= self._samples[-1][0]:
                return  # a clock that did not move gives no rate
            self._samples.append((at_s, dict(values)))
            totals: dict[str, float] = {}
            names: dict[str, set[str]] = {}
            for name, value in values.items():
                prefix = name.partition(":")[0]
                totals[prefix] = totals.get(prefix, 0.0) + value
                names.setdefault(prefix, set()).add(name)
            self._totals.append(totals)
            self._latest_names = {prefix: frozenset(found) for prefix, found in names.items()}

    def series(self, name: str) -> list[float]:
        """The sampled values of ``name`` (0 where it was absent), oldest first."""
        with self._lock:
            return [values.get(name, 0.0) for _, values in self._samples]

    def rate_series(self, name: str) -> list[float]:
        """Per-second change of counter ``name`` between consecutive samples."""
        with self._lock:
            samples = list(self._samples)
        rates = []
        for (t0, before), (t1, after) in zip(samples, samples[1:], strict=False):
            delta = after.get(name, 0.0) - before.get(name, 0.0)
            rates.append(max(delta, 0.0) / (t1 - t0))
        return rates

    def rate(self, name: str) -> float:
        """The latest per-second change of ``name`` (0 before two samples)."""
        with self._lock:
            if len(self._samples) < 2:
                return 0.0
            (t0, before), (t1, after) = self._samples[-2], self._samples[-1]
        return max(after.get(name, 0.0) - before.get(name, 0.0), 0.0) / (t1 - t0)

    def summed_rate_series(self, prefix: str, names: set[str]) -> list[float]:
        """Per-second change of the sum of counters ``prefix:<name>`` for ``names`` between
        consecutive samples: the total a chart draws for many topics."""
        keys = {f"{prefix}:{name}" for name in names}
        with self._lock:
            samples = list(self._samples)
            if keys >= self._latest_names.get(prefix, frozenset()):
                sums = [
                    (t, totals.get(prefix, 0.0))
                    for (t, _), totals in zip(samples, self._totals, strict=True)
                ]
            else:
                sums = [(t, sum(values.get(key, 0.0) for key in keys)) for t, values in samples]
        return [
            max(after - before, 0.0) / (t1 - t0)
            for (t0, before), (t1, after) in zip(sums, sums[1:], strict=False)
        ]

    def __len__(self) -> int:
        return len(self._samples)
