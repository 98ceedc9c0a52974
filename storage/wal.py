"""The write-ahead file of an unsealed segment: CRC-framed Arrow IPC record batches.

Arrow IPC carries no checksum, so each batch is framed (magic, length, CRC32) to tell a torn or
corrupt tail from good data after a crash. Writes go straight to the OS with ``os.writev`` (no
Python-side buffer), so an acknowledged append survives a process crash; ``fsync`` is the
caller's policy (``flush.messages`` / ``flush.ms``).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from ray_broker.storage.schema import RECORD_SCHEMA

FRAME_MAGIC = 0x52424C31  # "RBL1"
_HEADER = struct.Struct("<III")
HEADER_BYTES = _HEADER.size


@dataclass(frozen=True)
class WalScan:
    """What reading a write-ahead file found: whole batches, and the damaged tail it ignored."""

    batches: list[pa.RecordBatch]
    valid_bytes: int
    file_bytes: int
    problem: str | None

    @property
    def torn_bytes(self) -> int:
        return self.file_bytes - self.valid_bytes


def encode_frame(batch: pa.RecordBatch) -> tuple[bytes, pa.Buffer]:
    body = batch.serialize()
    return _HEADER.pack(FRAME_MAGIC, body.size, zlib.crc32(body)), body


def scan(path: Path) -> WalScan:
    """Read every whole, checksummed frame of ``path``; stop at the first damaged one."""
    data = path.read_bytes()
    view = memoryview(data)
    batches: list[pa.RecordBatch] = []
    position = 0
    problem = None
    buffer = pa.py_buffer(data)
    while position < len(data):
        if len(data) - position < HEADER_BYTES:
            problem = f"partial frame header at byte {position}"
            break
        magic, length, crc = _HEADER.unpack_from(view, position)
        if magic != FRAME_MAGIC:
            problem = f"bad frame magic at byte {position}"
            break
        start = position + HEADER_BYTES
        if start + length > len(data):
            problem = f"partial frame body at byte {position} ({len(data) - start}/{length} bytes)"
            break
        if zlib.crc32(view[start : start + length]) != crc:
            problem = f"checksum mismatch in frame at byte {position}"
            break
        try:
            batch = pa.ipc.read_record_batch(buffer.slice(start, length), RECORD_SCHEMA)
        except (pa.ArrowInvalid, OSError) as exc:
            problem = f"unreadable Arrow IPC message at byte {position}: {exc}"
            break
        batches.append(batch)
        position = start + length
    return WalScan(batches, position, len(data), problem)


class WalWriter:
    """Appends frames to one write-ahead file and fsyncs it when told to."""

    def __init__(self, path: Path, truncate_at: int | None = None) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if truncate_at is not None:
            os.ftruncate(self._fd, truncate_at)
        self.size_bytes = os.fstat(self._fd).st_size

    def append(self, batch: pa.RecordBatch) -> int:
        header, body = encode_frame(batch)
        expected = len(header) + body.size
        written = os.writev(self._fd, [header, body])
        if written != expected:  # a short write leaves a torn frame that recovery will cut
            raise OSError(f"short write to {self.path}: {written} of {expected} bytes")
        self.size_bytes += written
        return written

    def truncate(self, size_bytes: int) -> None:
        os.ftruncate(self._fd, size_bytes)
        self.size_bytes = size_bytes

    def fsync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
