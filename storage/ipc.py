"""Record batches on the wire between processes: the Arrow IPC stream format.

Ray serializes an Arrow table itself, but copies and re-casts every sliced buffer on the way
(about 5 ms for a 16k-record slice on the reference VM, against 0.1 ms to write the IPC stream);
so clients and replicas ship IPC bytes and the receiver reads them without a copy.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ray_broker.errors import InvalidRecord


def to_ipc(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def from_ipc(buffer: Any) -> pa.Table:
    """Raises InvalidRecord if ``buffer`` is not an Arrow IPC stream."""
    try:
        return pa.ipc.open_stream(buffer).read_all()
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InvalidRecord(f"not an Arrow IPC stream of records: {exc}") from None
