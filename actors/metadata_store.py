"""Durable key → JSON documents on a compacted log: the Controller's topic metadata
(``__internal/cluster_metadata``) and the group coordinator's committed offsets
(``__internal/consumer_offsets``).

Using the broker's own storage engine (as Kafka does for both) gives crash recovery for free: a
restarted actor replays the log and the newest record per key wins; a null value deletes the key.
Every write is fsynced before it is acknowledged: losing a topic or a commit is not acceptable.

Bounded on disk: every ``COMPACT_EVERY_WRITES`` writes the log is compacted, and when it holds
more than ``SNAPSHOT_SEGMENTS`` segments (compaction keeps one file per rolled segment, so a
key committed 20,000 times left 20 files) the live documents are written to a fresh log that
replaces the old one — crash-safe by renames: ``<dir>.snapshot`` is complete before the old
directory is retired, and an interrupted swap is finished (or discarded) on the next open.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa

from ray_broker.storage.config import LogConfig
from ray_broker.storage.log import Log
from ray_broker.storage.segment import fsync_path

_CONFIG = LogConfig(
    segment_bytes=4 * 1024 * 1024, cleanup_policy="compact", retention_ms=-1, flush_messages=1
)
COMPACT_EVERY_WRITES = 1_000
SNAPSHOT_SEGMENTS = 4


class MetadataStore:
    """Key → JSON document, persisted in a compacted log under ``directory``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._snapshot_dir = self.directory.with_name(self.directory.name + ".snapshot")
        self._retired_dir = self.directory.with_name(self.directory.name + ".retired")
        self._finish_interrupted_swap()
        self.log = Log(self.directory, _CONFIG)
        self._writes = 0

    def _finish_interrupted_swap(self) -> None:
        if self._retired_dir.exists():
            if not self.directory.exists() and self._snapshot_dir.exists():
                self._snapshot_dir.rename(self.directory)  # the swap's last rename
            shutil.rmtree(self._retired_dir)
        elif self._snapshot_dir.exists():
            shutil.rmtree(self._snapshot_dir)  # an unfinished snapshot: the old log is whole

    def load(self) -> dict[str, dict[str, Any]]:
        """Every live key with its newest document."""
        return _documents(self.log)

    def put(self, key: str, document: dict[str, Any] | None) -> None:
        """Durably store (or, with None, delete) ``key``."""
        self.put_many({key: document})

    def put_many(self, documents: dict[str, dict[str, Any] | None]) -> None:
        """Durably store several keys at once: one append, one fsync, all or nothing."""
        if not documents:
            return
        _append(self.log, documents)
        self._writes += 1
        if self._writes % COMPACT_EVERY_WRITES == 0:
            self.log.roll()
            self.log.seal_pending()
            self.log.compact()
            if len(self.log.segment_bases()) > SNAPSHOT_SEGMENTS:
                self._snapshot()

    def _snapshot(self) -> None:
        """Replace the log by a fresh one holding only the live documents."""
        live = self.load()
        if self._snapshot_dir.exists():
            shutil.rmtree(self._snapshot_dir)
        fresh = Log(self._snapshot_dir, _CONFIG)
        if live:
            _append(fresh, live)
        fresh.flush()
        fresh.close()
        self.log.close()
        self.directory.rename(self._retired_dir)
        self._snapshot_dir.rename(self.directory)
        fsync_path(self.directory.parent)
        shutil.rmtree(self._retired_dir)
        self.log = Log(self.directory, _CONFIG)

    def close(self) -> None:
        self.log.close()


def _append(log: Log, documents: dict[str, dict[str, Any] | None]) -> None:
    keys = [key.encode() for key in documents]
    values = [
        None if doc is None else json.dumps(doc, sort_keys=True).encode()
        for doc in documents.values()
    ]
    log.append(pa.table({"key": keys, "value": pa.array(values, pa.binary())}))


def _documents(log: Log) -> dict[str, dict[str, Any]]:
    documents: dict[str, dict[str, Any]] = {}
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        table = log.read(offset, max_records=10_000)
        for key, value in zip(
            table.column("key").to_pylist(), table.column("value").to_pylist(), strict=True
        ):
            if value is None:
                documents.pop(key.decode(), None)
            else:
                documents[key.decode()] = json.loads(value)
        offset = table.column("offset")[-1].as_py() + 1
    return documents
