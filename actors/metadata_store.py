"""Durable key → JSON documents on a compacted log: the Controller's topic metadata
(``__cluster_metadata``) and the group coordinator's committed offsets (``__consumer_offsets``).

Using the broker's own storage engine (as Kafka does for both) gives crash recovery for free: a
restarted actor replays the log and the newest record per key wins; a null value deletes the key.
Every write is fsynced before it is acknowledged: losing a topic or a commit is not acceptable.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pyarrow as pa

from ray_broker.storage.config import LogConfig
from ray_broker.storage.log import Log

_CONFIG = LogConfig(
    segment_bytes=4 * 1024 * 1024, cleanup_policy="compact", retention_ms=-1, flush_messages=1
)
COMPACT_EVERY_WRITES = 1_000


class MetadataStore:
    """Key → JSON document, persisted in a compacted log under ``directory``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.log = Log(directory, _CONFIG)
        self._writes = 0

    def load(self) -> dict[str, dict[str, Any]]:
        """Every live key with its newest document."""
        documents: dict[str, dict[str, Any]] = {}
        offset = self.log.log_start_offset
        while offset < self.log.log_end_offset:
            table = self.log.read(offset, max_records=10_000)
            for key, value in zip(
                table.column("key").to_pylist(), table.column("value").to_pylist(), strict=True
            ):
                if value is None:
                    documents.pop(key.decode(), None)
                else:
                    documents[key.decode()] = json.loads(value)
            offset = table.column("offset")[-1].as_py() + 1
        return documents

    def put(self, key: str, document: dict[str, Any] | None) -> None:
        """Durably store (or, with None, delete) ``key``."""
        self.put_many({key: document})

    def put_many(self, documents: dict[str, dict[str, Any] | None]) -> None:
        """Durably store several keys at once: one append, one fsync, all or nothing."""
        if not documents:
            return
        keys = [key.encode() for key in documents]
        values = [
            None if doc is None else json.dumps(doc, sort_keys=True).encode()
            for doc in documents.values()
        ]
        self.log.append(pa.table({"key": keys, "value": pa.array(values, pa.binary())}))
        self._writes += 1
        if self._writes % COMPACT_EVERY_WRITES == 0:
            self.log.roll()
            self.log.seal_pending()
            self.log.compact()

    def close(self) -> None:
        self.log.close()
