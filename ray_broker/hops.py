"""Where a record's latency goes: CLOCK_MONOTONIC stamps at each hop, keyed by offset.

Off by default (a stamp site costs one attribute test per *batch*). ``loadtest/latency.py
--breakdown`` turns it on in the producer, the partition leader and the consumer; every process on
one host reads the same monotonic clock, so their stamps line up by offset without clock
correction. Each process keeps only its last ``MAX_STAMPS``.

The hops, in the order a record passes them (``BREAKDOWN`` names the intervals between them):
``handoff`` the producer's sender submitted the batch to Ray · ``actor_receipt`` the leader's
``produce`` began · ``appended`` the batch is in the log · ``acked`` the producer has the reply ·
``fetch_woke`` a parked fetch saw the record · ``fetch_replied`` its answer was serialised ·
``consumer_receipt`` the consumer decoded it · (``polled``, the application got it, and ``send``,
when ``send()`` was called, are stamped by the caller).
"""

from __future__ import annotations

import time
from collections import deque

MAX_STAMPS = 100_000

# (label, from hop, to hop) — consecutive intervals of one record's trip.
BREAKDOWN = (
    ("send() → sender hand-off to Ray", "send", "handoff"),
    ("Ray request → leader's produce()", "handoff", "actor_receipt"),
    ("append to the log", "actor_receipt", "appended"),
    ("append → parked fetch wakes", "appended", "fetch_woke"),
    ("read + serialise the fetch reply", "fetch_woke", "fetch_replied"),
    ("Ray reply → consumer decoded", "fetch_replied", "consumer_receipt"),
    ("consumer → application's poll()", "consumer_receipt", "polled"),
    ("end to end", "send", "polled"),
    ("produce acknowledged (send → ack)", "send", "acked"),
)


class HopStamps:
    """A bounded buffer of ``(hop, offset, monotonic_ns)``; see the module docstring."""

    def __init__(self, max_stamps: int = MAX_STAMPS) -> None:
        self.enabled = False
        self._stamps: deque[tuple[str, int, int]] = deque(maxlen=max_stamps)

    def stamp(self, hop: str, offset: int, ns: int | None = None) -> None:
        if self.enabled:
            self._stamps.append((hop, offset, time.monotonic_ns() if ns is None else ns))

    def drain(self) -> list[tuple[str, int, int]]:
        stamps = list(self._stamps)
        self._stamps.clear()
        return stamps


# This process's stamps (one producer, actor or consumer process each).
STAMPS = HopStamps()


def by_offset(stamps: list[tuple[str, int, int]]) -> dict[int, dict[str, int]]:
    """Each offset's first stamp per hop (a retried or re-fetched record keeps its first)."""
    out: dict[int, dict[str, int]] = {}
    for hop, offset, ns in stamps:
        out.setdefault(offset, {}).setdefault(hop, ns)
    return out
