"""The bounded buffer between the application's logging calls and the shipper thread.

Appending never blocks and never fails: when the buffer is full — ``capacity`` records, or
``capacity_bytes`` of them as the caller sizes them — the record is dropped and counted, and
the count is reported (``take_dropped``) so that the shipper can say so in the
log itself. A plain class: tests drive it without threads.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

BUFFER_RECORDS = 100_000
BUFFER_BYTES = 64 * 1024 * 1024


class LogBuffer(Generic[T]):
    def __init__(self, capacity: int = BUFFER_RECORDS, capacity_bytes: int = BUFFER_BYTES) -> None:
        assert capacity > 0 and capacity_bytes > 0
        self.capacity = capacity
        self.capacity_bytes = capacity_bytes
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0  # buffered and in flight
        self._taken_bytes: deque[int] = deque()  # per batch taken and not done yet
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._dropped = 0
        self.dropped_total = 0
        self.in_flight = 0  # taken by the shipper, not acknowledged yet: still within the bound

    def append(self, item: T, size_bytes: int = 0) -> bool:
        """Keep ``item`` unless the buffer (with what is in flight) is full by count or bytes;
        False if dropped."""
        with self._lock:
            if (
                len(self._items) + self.in_flight >= self.capacity
                or self._bytes + size_bytes > self.capacity_bytes
            ):
                self._dropped += 1
                self.dropped_total += 1
                return False
            self._items.append((item, size_bytes))
            self._bytes += size_bytes
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
            if count:
                self._taken_bytes.append(sum(size for _, size in taken))
            return [item for item, _ in taken]

    def done(self, count: int) -> None:
        """The oldest batch taken (of ``count`` items) was delivered: its room is free."""
        with self._lock:
            self.in_flight -= count
            if count:
                self._bytes -= self._taken_bytes.popleft()
            assert self.in_flight >= 0 and self._bytes >= 0

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
    def pending_bytes(self) -> int:
        """Bytes buffered plus in flight, as the caller sized them."""
        with self._lock:
            return self._bytes

    @property
    def pending(self) -> int:
        """Buffered plus in flight."""
        with self._lock:
            return len(self._items) + self.in_flight
