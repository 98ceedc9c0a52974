"""A bounded map whose entries expire when idle: logged-in users and console sessions.

A plain class on an injected clock, so expiry and eviction are tested without waiting.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ExpiringCache(Generic[K, V]):
    """At most ``capacity`` entries (least recently used evicted first); an entry not used for
    ``idle_s`` is gone. ``on_evict`` is called outside the lock for every entry dropped, so a
    dropped user's producer is closed rather than leaked."""

    def __init__(
        self,
        capacity: int,
        idle_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_evict: Callable[[V], None] | None = None,
    ) -> None:
        assert capacity > 0 and idle_s > 0
        self._capacity = capacity
        self._idle_s = idle_s
        self._clock = clock
        self._on_evict = on_evict
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        dropped: list[V] = []
        with self._lock:
            found = self._entries.get(key)
            now = self._clock()
            if found is not None and now - found[0] > self._idle_s:
                del self._entries[key]
                dropped.append(found[1])
                found = None
            if found is not None:
                self._entries[key] = (now, found[1])
                self._entries.move_to_end(key)
        self._evicted(dropped)
        return None if found is None else found[1]

    def put(self, key: K, value: V) -> None:
        dropped: list[V] = []
        with self._lock:
            now = self._clock()
            previous = self._entries.pop(key, None)
            if previous is not None and previous[1] is not value:
                dropped.append(previous[1])
            self._entries[key] = (now, value)
            while len(self._entries) > self._capacity:
                dropped.append(self._entries.popitem(last=False)[1][1])
            for stale in [k for k, (used, _) in self._entries.items() if now - used > self._idle_s]:
                dropped.append(self._entries.pop(stale)[1])
        self._evicted(dropped)

    def pop(self, key: K) -> V | None:
        with self._lock:
            found = self._entries.pop(key, None)
        if found is not None:
            self._evicted([found[1]])
        return None if found is None else found[1]

    def clear(self) -> None:
        with self._lock:
            dropped = [value for _, value in self._entries.values()]
            self._entries.clear()
        self._evicted(dropped)

    def __len__(self) -> int:
        return len(self._entries)

    def _evicted(self, values: list[V]) -> None:
        if self._on_evict is None:
            return
        for value in values:
            try:
                self._on_evict(value)
            except Exception:  # closing a stale user's clients must not fail a request
                continue
