"""A partition replica's housekeeping: sealing rolled segments to Parquet, retention and
compaction, tiering old segments to remote storage, and holding writes while sealing lags.

The blocking work (a zstd Parquet write, an upload) runs on worker threads; everything else
runs on the actor's event loop, so the log itself needs no locks.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ray_broker.actors.partition.core import Partition
from ray_broker.errors import BrokerBusy

logger = logging.getLogger(__name__)

# How long a write waits for Parquet sealing to catch up before BrokerBusy (see make_room).
UNSEALED_WAIT_S = 10.0


class Housekeeping:
    def __init__(self, core: Partition) -> None:
        self.core = core
        self._sealing: asyncio.Task[None] | None = None
        self._tiering = False

    async def make_room(self, *, refuse: bool = True) -> None:
        """Hold a write while rolled segments wait for Parquet beyond the memory bound.

        Sealing is slower than appending on a small machine; without this wait a sustained
        burst piles rolled segments up in memory and the broker's memory grows with the backlog
        instead of staying at about two segments per partition. Waiting here slows producers to
        the disk's pace (back-pressure, as a Kafka quota's throttle does); only a wait past
        ``UNSEALED_WAIT_S`` refuses the write (a follower never refuses its leader:
        ``refuse=False`` just waits).

        Raises:
            BrokerBusy: sealing did not catch up in time (retriable; nothing was written).
        """
        log = self.core.log
        limit = max(log.config.log_unsealed_bytes_max, log.config.segment_bytes)
        deadline = time.monotonic() + UNSEALED_WAIT_S
        while log.unsealed_bytes > limit:
            sealing = self.seal_in_background()
            remaining = deadline - time.monotonic()
            if sealing is None or remaining <= 0:
                if not refuse:
                    return
                raise BrokerBusy(
                    f"{self.core.name} holds {log.unsealed_bytes} bytes of rolled segments not "
                    f"yet written to Parquet (log.unsealed.bytes.max={limit}) after waiting "
                    f"{UNSEALED_WAIT_S} s; retry after a back-off"
                )
            # asyncio.wait never cancels the sealing task, unlike wait_for.
            await asyncio.wait({sealing}, timeout=remaining)

    def seal_in_background(self) -> asyncio.Task[None] | None:
        """One sealing task at a time: two would write the same segment's Parquet file."""
        if self._sealing is None and self.core.log.next_segment_to_seal() is not None:
            self._sealing = asyncio.get_running_loop().create_task(self._seal())
        return self._sealing

    async def _seal(self) -> None:
        log = self.core.log
        try:
            while (segment := log.next_segment_to_seal()) is not None and not self.core.deleted:
                sealed = await asyncio.to_thread(log.write_sealed, segment)
                log.install_sealed(segment, sealed)
        finally:
            self._sealing = None

    async def run(self) -> dict[str, int]:
        """Roll, retention, compaction, sealing, then moving old segments to remote storage."""
        report = self.core.maintain()
        sealing = self.seal_in_background()
        if sealing is not None:
            await sealing
        report["segments_tiered"] = await self._tier()
        return report

    async def _tier(self) -> int:
        """Upload sealed segments past local.retention.ms (tiered storage); one run at a time.
        An upload that fails leaves the local file; the next round tries again."""
        if self._tiering:
            return 0
        self._tiering = True
        moved = 0
        try:
            log = self.core.log
            for segment in log.segments_to_tier(self.core.high_watermark):
                if self.core.deleted:
                    break
                remote = await asyncio.to_thread(log.upload, segment)
                moved += log.install_uploaded(segment, remote)
        finally:
            self._tiering = False
        return moved

    async def every(self, interval_s: float) -> None:
        """Run housekeeping every ``interval_s`` until the partition is deleted."""
        while not self.core.deleted:
            await asyncio.sleep(interval_s)
            if self.core.deleted:
                return
            try:
                await self.run()
            except Exception:  # keep serving; the next round retries
                logger.exception("housekeeping of partition %s failed", self.core.name)

    async def finish_sealing(self) -> None:
        """Let a running seal finish (before the log's files are closed)."""
        if self._sealing is not None:
            try:
                await self._sealing
            except Exception:  # the segment stays in memory; recovery rebuilds it from files
                logger.exception("sealing of partition %s failed at close", self.core.name)
