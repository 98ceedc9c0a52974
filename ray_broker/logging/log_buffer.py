"""The bounded buffer between the application's logging calls and the shipper thread.

Appending never blocks and never fails: when the buffer is full the record is dropped and
counted, and the count is reported (``take_dropped``) so that the shipper can say so in the
log itself. A plain class: tests drive it without threads.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

BUFFER_RECORDS = 100_000


class LogBuffer(Generic[T]):
    def __init__(self, capacity: int = BUFFER_RECORDS) -> None:
        assert capacity > 0
        self.capacity = capacity
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._dropped = 0
        self.dropped_total = 0
        self.in_flight = 0  # taken by the shipper, not acknowledged yet: still within the bound

    def append(self, item: T) -> bool:
        """Keep ``item`` unless the buffer (with what is in flight) is full; False if dropped."""
        with self._lock:
            if len(self._items) + self.in_flight >= self.capacity:
                self._dropped += 1
                self.dropped_total += 1
                return False
            self._items.append(item)
            if len(self._items) == 1:
                self._ready.notify()
            return True

    def take(self, max_items: int, wait_s: float) -> list[T]:
        """Up to ``max_items``, waiting up to ``wait_s`` for the first; they count as in
        flight until ``done``."""
        with self._lock:
            if not self._items and wait_s > 0:
                self._ready.wait(wait_s)
            count = min(max_items, len(self._items))
            taken = [self._items.popleft() for _ in range(count)]
            self.in_flight += count
            return taken

    def done(self, count: int) -> None:
        with self._lock:
            self.in_flight -= count
            assert self.in_flight >= 0

    def take_dropped(self) -> int:
        """Records dropped since the last call."""
        with self._lock:
            dropped, self._dropped = self._dropped, 0
            return dropped

    def wake(self) -> None:
        with self._lock:
            self._ready.notify_all()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def pending(self) -> int:
        """Buffered plus in flight."""
        with self._lock:
            return len(self._items) + self.in_flight
