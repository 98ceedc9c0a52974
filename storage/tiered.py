"""Remote storage for old sealed segments (tiered storage, Kafka's KIP-405 idea).

A topic with ``remote.storage.enable`` moves each sealed Parquet segment older than
``local.retention.ms`` to ``remote.storage.uri`` — any filesystem ``pyarrow.fs`` opens
(``s3://bucket/prefix``, ``gs://…``, ``hdfs://…``, ``file:///…``) — and deletes the local copy;
reads, ``read_topic`` and retention then use the remote copy in place of the local one.

Each replica keeps its own remote directory (``<uri>/<topic>/partition=<p>/<replica slot>/``):
replicas roll segments independently, so their files do not line up, and a replica that takes
over after a failover already has its own. (Kafka uploads only the leader's segments and keeps a
metadata topic of them; that saves remote space, and is what this would grow into.)

An upload writes ``_<name>.tmp`` and then moves it to its final name, so a crash leaves either no
remote copy (the local file stays and is uploaded again) or a complete one (a local copy found
beside it at recovery is deleted).
"""

from __future__ import annotations

import contextlib
import posixpath
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from ray_broker.errors import InvalidConfig, KafkaStorageError
from ray_broker.storage.segment import PARQUET_SUFFIX, SealedSegment, segment_name

COPY_BUFFER_BYTES = 8 * 2**20


def open_filesystem(uri: str) -> tuple[Any, str]:
    """The filesystem and root path of ``uri``.

    Raises:
        InvalidConfig: pyarrow cannot open the URI (unknown scheme, malformed).
    """
    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError, TypeError) as exc:
        raise InvalidConfig(f"remote.storage.uri {uri!r} cannot be opened: {exc}") from None


class RemoteTier:
    """One replica's directory in remote storage."""

    def __init__(self, uri: str, relative: str) -> None:
        self.uri = uri.rstrip("/")
        self.relative = relative.strip("/")
        self.filesystem, root = open_filesystem(self.uri)
        self.root = posixpath.join(root.rstrip("/"), self.relative)
        try:
            self.filesystem.create_dir(self.root, recursive=True)
        except OSError as exc:
            raise KafkaStorageError(f"cannot create {self.uri}/{self.relative}: {exc}") from None

    def uri_of(self, base_offset: int) -> str:
        """The URI of a stored segment (for readers that open it themselves)."""
        return f"{self.uri}/{self.relative}/{segment_name(base_offset, PARQUET_SUFFIX)}"

    def path_of(self, base_offset: int) -> str:
        return posixpath.join(self.root, segment_name(base_offset, PARQUET_SUFFIX))

    def bases(self) -> list[int]:
        """Base offsets of the segments stored here (temporary uploads are not segments).

        Raises:
            KafkaStorageError: the remote storage cannot be listed.
        """
        try:
            infos = self.filesystem.get_file_info(
                pafs.FileSelector(self.root, allow_not_found=True)
            )
        except OSError as exc:
            raise KafkaStorageError(f"cannot list {self.uri}/{self.relative}: {exc}") from None
        out = []
        for info in infos:
            stem = info.base_name.removesuffix(PARQUET_SUFFIX)
            if info.base_name.endswith(PARQUET_SUFFIX) and len(stem) == 20 and stem.isdigit():
                out.append(int(stem))
        return sorted(out)

    def load(self, base_offset: int) -> SealedSegment:
        return SealedSegment.load(self.path_of(base_offset), self.filesystem)

    def upload(self, local: Path, base_offset: int) -> SealedSegment:
        """Copy a local segment file here; returns the remote segment.

        Raises:
            KafkaStorageError: the copy failed (the local file is untouched).
        """
        final = self.path_of(base_offset)
        temporary = posixpath.join(self.root, f"_{posixpath.basename(final)}.tmp")
        try:
            with (
                local.open("rb") as source,
                self.filesystem.open_output_stream(temporary) as target,
            ):
                while chunk := source.read(COPY_BUFFER_BYTES):
                    target.write(chunk)
            self.filesystem.move(temporary, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.filesystem.delete_file(temporary)
            raise KafkaStorageError(f"upload of {local} to {self.uri} failed: {exc}") from None
        return self.load(base_offset)

    def delete_all(self) -> None:
        """Remove this replica's remote directory (its topic was deleted)."""
        with contextlib.suppress(FileNotFoundError, OSError):
            self.filesystem.delete_dir(self.root)
