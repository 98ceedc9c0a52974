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
        self._lock = threading.Lock()

    def add(self, at_s: float, values: dict[str, float]) -> None:
        with self._lock:
            if self._samples and at_s <= self._samples[-1][0]:
                return  # a clock that did not move gives no rate
            self._samples.append((at_s, dict(values)))

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
        rates = self.rate_series(name)
        return rates[-1] if rates else 0.0

    def __len__(self) -> int:
        return len(self._samples)
