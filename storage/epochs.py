"""The leader-epoch cache of a partition replica: which leader epoch wrote which offsets.

Each entry ``(epoch, start_offset)`` says records from ``start_offset`` on (up to the next entry)
were written by the leader of ``epoch``. When leadership changes, a follower asks the new leader
where its own latest epoch ends on the leader's log and truncates there, so a record that was
never committed (written by an old leader, lost in the failover) is cut instead of served —
Kafka's KIP-101, which truncating to the high watermark alone gets wrong.

Persisted as a small JSON file next to the segments, rewritten atomically on every change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ray_broker.storage.segment import publish

EPOCHS_FILE = "_leader_epochs.json"


class LeaderEpochCache:
    """``directory=None`` keeps the cache in memory only (the replication simulator)."""

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.path = self.directory / EPOCHS_FILE if self.directory is not None else None
        self.entries: list[tuple[int, int]] = []
        if self.path is not None and self.path.exists():
            self.entries = [(int(e), int(o)) for e, o in json.loads(self.path.read_text())]

    @property
    def latest_epoch(self) -> int:
        return self.entries[-1][0] if self.entries else -1

    def assign(self, epoch: int, start_offset: int) -> None:
        """Record that ``epoch`` writes from ``start_offset`` on (no-op if already known)."""
        if self.entries and epoch <= self.entries[-1][0]:
            assert epoch == self.entries[-1][0] or start_offset >= self.entries[-1][1], (
                f"epoch {epoch} at {start_offset} is older than {self.entries[-1]}"
            )
            return
        if self.entries and start_offset < self.entries[-1][1]:
            self.truncate_from(start_offset)
        self.entries.append((epoch, start_offset))
        self._save()

    def end_offset_for(self, epoch: int, log_end_offset: int) -> int:
        """Where the records of ``epoch`` (or the newest older epoch) end on this log.

        That is the start of the first newer epoch, or the log end if none is newer. A follower
        whose latest epoch is ``epoch`` truncates to this offset.
        """
        for index, (known, _) in enumerate(self.entries):
            if known > epoch:
                return self.entries[index][1] if index else self.entries[0][1]
        return log_end_offset

    def truncate_from(self, offset: int) -> None:
        """Forget entries for offsets >= ``offset`` (the log was truncated there)."""
        kept = [(e, o) for e, o in self.entries if o < offset]
        if kept != self.entries:
            self.entries = kept
            self._save()

    def _save(self) -> None:
        if self.path is None or self.directory is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.entries))
        publish(tmp, self.path)
