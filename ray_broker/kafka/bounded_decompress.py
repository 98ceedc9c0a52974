"""Decompressing a produced record batch without trusting its ratio.

A 261 KB gzip batch can inflate to 256 MiB; a codec asked for "everything" allocates all of it
before anyone can say the batch is too large. Here every codec inflates at most ``limit + 1``
bytes (streaming, or — for snappy, whose blocks state their size — after reading the stated
size), so a bomb costs ``limit`` bytes at most and is refused with ``RecordTooLarge``.

Codecs by Kafka's attribute bits: 1 gzip, 2 snappy (raw or xerial-framed), 3 lz4 (frame),
4 zstd.
"""

from __future__ import annotations

import io
import struct
import zlib

from ray_broker.errors import InvalidRecord, RecordTooLarge

GZIP, SNAPPY, LZ4, ZSTD = 1, 2, 3, 4
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER_BYTES = 16
_READ_CHUNK_BYTES = 1 << 20


def decompress(codec: int, data: bytes | memoryview, limit: int) -> bytes:
    """The inflated bytes of ``data``.

    Raises:
        RecordTooLarge: they would exceed ``limit`` bytes.
        InvalidRecord: an unknown codec, or bytes the codec cannot inflate.
    """
    try:
        if codec == GZIP:
            out = _gzip(bytes(data), limit)
        elif codec == SNAPPY:
            out = _snappy(memoryview(data), limit)
        elif codec == LZ4:
            out = _lz4(bytes(data), limit)
        elif codec == ZSTD:
            out = _zstd(bytes(data), limit)
        else:
            raise InvalidRecord(f"unknown compression codec {codec}")
    except (RecordTooLarge, InvalidRecord):
        raise
    except Exception as exc:  # each codec's own error types: corrupt input
        raise InvalidRecord(f"a record batch does not decompress: {exc}") from None
    if len(out) > limit:
        raise _too_large(limit)
    return out


def _too_large(limit: int) -> RecordTooLarge:
    return RecordTooLarge(
        f"a compressed record batch inflates to more than {limit:,} bytes; "
        "send smaller batches (batch.size)"
    )


def _gzip(data: bytes, limit: int) -> bytes:
    out = bytearray()
    while data:  # gzip allows concatenated members, as Java's GZIPInputStream reads them
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        out += inflater.decompress(data, limit + 1 - len(out))
        if len(out) > limit:
            raise _too_large(limit)
        if not inflater.eof:
            raise InvalidRecord("a gzip record batch is truncated")
        data = inflater.unused_data
    return bytes(out)


def _lz4(data: bytes, limit: int) -> bytes:
    import lz4.frame

    inflater = lz4.frame.LZ4FrameDecompressor()
    out = inflater.decompress(data, max_length=limit + 1)
    if len(out) > limit:
        raise _too_large(limit)
    return out


def _zstd(data: bytes, limit: int) -> bytes:
    import zstandard

    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
        out = bytearray()
        while len(out) <= limit:
            chunk = reader.read(min(_READ_CHUNK_BYTES, limit + 1 - len(out)))
            if not chunk:
                break
            out += chunk
    return bytes(out)


def _snappy(data: memoryview, limit: int) -> bytes:
    import cramjam

    blocks: list[memoryview] = []
    if bytes(data[: len(_XERIAL_MAGIC)]) == _XERIAL_MAGIC:
        cursor = _XERIAL_HEADER_BYTES
        while cursor < len(data):
            if cursor + 4 > len(data):
                raise InvalidRecord("a snappy record batch is truncated")
            (size,) = struct.unpack_from(">i", data, cursor)
            cursor += 4
            if size < 0 or cursor + size > len(data):
                raise InvalidRecord("a snappy record batch is truncated")
            blocks.append(data[cursor : cursor + size])
            cursor += size
    else:
        blocks.append(data)
    stated = sum(_snappy_stated_length(block) for block in blocks)
    if stated > limit:
        raise _too_large(limit)
    return b"".join(bytes(cramjam.snappy.decompress_raw(bytes(block))) for block in blocks)


def _snappy_stated_length(block: memoryview) -> int:
    """A raw snappy block starts with its uncompressed length as a varint."""
    value = shift = 0
    for position in range(min(len(block), 5)):
        byte = block[position]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7
    raise InvalidRecord("a snappy block has no valid length")
