"""The follower side of replication: what a leader's sender calls (``replication_links.py``).

Only the Controller and the partition's own replicas carry the token these calls need, so a
caller with just this actor's handle cannot demote a leader or rewrite its log. Every call is
fenced by leader epoch: an older leader is refused, a newer one demotes this replica.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from ray_broker.actors.partition.arguments import (
    check_epoch_value,
)
from ray_broker.actors.partition.shell import PartitionShell
from ray_broker.errors import (
    InvalidRecord,
    Unauthorized,
)
from ray_broker.storage.ipc import from_ipc

logger = logging.getLogger(__name__)


class FollowerCalls(PartitionShell):
    def _authorize(self, token: str) -> None:
        if self._token and not (
            isinstance(token, str) and hmac.compare_digest(token.encode(), self._token.encode())
        ):
            raise Unauthorized(
                f"{self.core.name}: role, epoch and replication calls are the Controller's and "
                "its partitions' own; this call did not carry their token"
            )

    def _check_epoch(self, epoch: int) -> None:
        """Raises FencedLeaderEpoch for a stale leader; a newer one demotes this replica."""
        check_epoch_value(epoch)
        if self.replica.accept_leader(epoch):
            logger.warning("%s: fenced by leader epoch %d, stepping down", self.core.name, epoch)
            self._stepped_down()

    async def epoch_state(
        self, epoch: int, *, token: str = ""
    ) -> tuple[list[tuple[int, int]], int]:
        """(leader-epoch entries, log end offset) for a new leader's divergence check."""
        self._authorize(token)
        self._start_background()
        self._check_epoch(epoch)
        return list(self.core.epochs.entries), self.core.log_end_offset

    async def truncate(
        self,
        epoch: int,
        offset: int,
        leader_log_start: int,
        expected_end: int | None = None,
        *,
        token: str = "",
    ) -> int:
        """Cut this follower's log at ``offset`` (or restart it at the leader's log start when it
        is too far behind); returns the new log end offset.

        ``expected_end`` is the log end the leader compared epochs against; if the log moved
        since (a late, repeated request), nothing is cut and the leader compares again.

        Raises:
            FencedLeaderEpoch: the sender is a stale leader.
            InvalidRecord: the log moved since the comparison.
            Unauthorized: the call does not carry the Controller's token.
        """
        self._authorize(token)
        self._check_epoch(epoch)
        if expected_end is not None and expected_end != self.core.log_end_offset:
            raise InvalidRecord(
                f"{self.core.name}: log end is {self.core.log_end_offset}, not {expected_end}; "
                "compare epochs again"
            )
        if self.core.log_end_offset < leader_log_start:
            self.core.start_from(leader_log_start)
        else:
            self.core.truncate_to(min(offset, self.core.log_end_offset))
        return self.core.log_end_offset

    async def replicate(
        self,
        epoch: int,
        records_ipc: Any,
        epochs: list[tuple[int, int]],
        leader_high_watermark: int,
        *,
        token: str = "",
    ) -> int:
        """Append the leader's records (offsets included); returns the new log end offset.

        Raises:
            FencedLeaderEpoch: the sender is an old leader.
            InvalidRecord: the records do not continue this log (the leader re-syncs).
            Unauthorized: the call does not carry the Controller's token.
        """
        self._authorize(token)
        self._start_background()
        self._check_epoch(epoch)
        table = from_ipc(records_ipc) if records_ipc is not None else None
        if table is not None and table.num_rows:
            # A follower never refuses its leader; waiting slows the leader's push instead.
            await self.housekeeping.make_room(refuse=False)
            self._check_epoch(epoch)
            self.core.append_replica(table, epochs)
            self.housekeeping.seal_in_background()
        if self.replica.follower_high_watermark(leader_high_watermark):
            self.signals.data_arrived()
        return self.core.log_end_offset
