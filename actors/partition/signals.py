"""Wake-ups on a partition actor's event loop: new records, and a moved high watermark.

Everything parked on the partition waits on one of these — a long-poll fetch or share fetch
for data, a follower's idle sender for the next append, an ``acks=all`` write for the high
watermark. Each event is replaced after it fires, so a waiter that arrives later waits for the
*next* change instead of finding a stale one set.
"""

from __future__ import annotations

import asyncio
import contextlib


class PartitionSignals:
    def __init__(self) -> None:
        self._data = asyncio.Event()
        self._high_watermark = asyncio.Event()

    def data_arrived(self) -> None:
        """Records were appended or released (share groups), or the log was deleted."""
        self._data.set()
        self._data = asyncio.Event()

    def high_watermark_moved(self) -> None:
        """The high watermark moved, or this replica stopped leading."""
        self._high_watermark.set()
        self._high_watermark = asyncio.Event()

    async def wait_for_data(self, timeout_s: float) -> None:
        """Until the next ``data_arrived`` or ``timeout_s``, whichever comes first."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._data.wait(), max(timeout_s, 0.0))

    async def wait_for_high_watermark(self, timeout_s: float) -> None:
        """Until the next ``high_watermark_moved`` or ``timeout_s``."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._high_watermark.wait(), max(timeout_s, 0.0))
