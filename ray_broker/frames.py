"""The data plane's frames: what a client and a partition actor say on a direct connection.

Ray stays the control plane (placement, discovery, failover); records travel over one TCP
connection per client and partition leader, as Kafka's, NATS's and RabbitMQ's clients keep
one per broker. A frame is::

    [u32 length of the rest][u32 header length][header: MessagePack][body: Arrow IPC or empty]

all big-endian. Headers are msgspec structs (a schema, so a malformed header is a typed
error and never an arbitrary object); record batches stay Arrow IPC streams, read zero-copy
from the received buffer.

A client says ``Hello`` first (its session token on a secured broker) and then sends requests,
several in flight; the leader answers them in the order they came. A leader pushing records to
a follower speaks the same way (``EpochState``, ``Truncate``, ``Replicate``), its Hello
carrying the broker's internal token, which only the Controller and the replicas hold.

A request may name the leader epoch it expects (``NO_EPOCH`` skips the check): a replica that
leads another epoch answers ``NotLeader`` with the epoch it knows. Produce and fetch are
refused by any replica that is not the leader all the same, so a client that lost track of
the leader gets ``NotLeader`` or a lost connection, both retriable, and asks the Controller
again.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

from ray_broker import errors

LENGTH = struct.Struct(">I")
HEADER_LENGTH = struct.Struct(">I")
# Before a connection has said Hello (and, on a secured broker, proved its session), frames
# are capped small, as Kafka caps them at 512 KiB before SASL: a stranger cannot make the
# leader buffer a large frame.
PRE_AUTH_FRAME_MAX = 64 * 1024
FRAME_MAX = 256 * 1024 * 1024
HEADER_MAX = 64 * 1024
NO_EPOCH = -1  # a request that does not check the leader epoch


class Hello(msgspec.Struct, tag="hello"):
    session: str = ""
    client_id: str = ""


class Produce(msgspec.Struct, tag="produce"):
    producer_id: int | None
    producer_epoch: int
    base_sequence: int
    acks: int
    predecessors_in_flight: bool
    transactional: bool
    client_id: str = ""


class Fetch(msgspec.Struct, tag="fetch"):
    offset: int
    max_records: int
    max_bytes: int
    max_wait_ms: int
    read_committed: bool
    consumer: str = ""
    client_id: str = ""


class EpochState(msgspec.Struct, tag="epoch_state"):
    """A leader asks a follower for its leader-epoch entries and log end (KIP-101)."""

    epoch: int


class Truncate(msgspec.Struct, tag="truncate"):
    epoch: int
    offset: int
    leader_log_start: int
    expected_end: int


class Replicate(msgspec.Struct, tag="replicate"):
    """A leader's records for a follower (the body; none for a heartbeat)."""

    epoch: int
    epochs: list[tuple[int, int]]
    high_watermark: int


Request = Hello | Produce | Fetch | EpochState | Truncate | Replicate


class Envelope(msgspec.Struct, array_like=True):
    correlation: int
    epoch: int
    request: Request


class Welcome(msgspec.Struct, tag="welcome"):
    epoch: int
    topic: str
    partition: int


class Produced(msgspec.Struct, tag="produced"):
    base_offset: int
    last_offset: int
    log_append_time: int
    log_start_offset: int
    duplicate: bool
    throttle_time_ms: int


class Fetched(msgspec.Struct, tag="fetched"):
    num_records: int
    high_watermark: int
    log_start_offset: int
    next_offset: int
    last_stable_offset: int
    throttle_time_ms: int


class Failed(msgspec.Struct, tag="failed"):
    error: str
    message: str
    fields: dict[str, Any] = {}


class EpochStated(msgspec.Struct, tag="epoch_stated"):
    entries: list[tuple[int, int]]
    log_end: int


class LogEnd(msgspec.Struct, tag="log_end"):
    """A follower's log end after a truncate or a replicate."""

    log_end: int


Result = Welcome | Produced | Fetched | EpochStated | LogEnd | Failed


class Answer(msgspec.Struct, array_like=True):
    correlation: int
    result: Result


_ENCODER = msgspec.msgpack.Encoder()
_REQUESTS = msgspec.msgpack.Decoder(Envelope)
_ANSWERS = msgspec.msgpack.Decoder(Answer)


def frame(header: Envelope | Answer, body: bytes | memoryview | None = None) -> list[bytes]:
    """The buffers of one frame (written with ``writelines``: the body is not copied)."""
    encoded = _ENCODER.encode(header)
    size = HEADER_LENGTH.size + len(encoded) + (len(body) if body is not None else 0)
    parts = [LENGTH.pack(size) + HEADER_LENGTH.pack(len(encoded)) + encoded]
    if body is not None and len(body):
        parts.append(body)  # type: ignore[arg-type]
    return parts


def split(payload: bytes | memoryview) -> tuple[memoryview, memoryview]:
    """(header, body) of a frame's payload (what follows its length).

    Raises:
        InvalidRequest: the header length does not fit the frame.
    """
    view = memoryview(payload)
    if len(view) < HEADER_LENGTH.size:
        raise errors.InvalidRequest("a data-plane frame shorter than its header length")
    (length,) = HEADER_LENGTH.unpack_from(view)
    end = HEADER_LENGTH.size + length
    if length > HEADER_MAX or end > len(view):
        raise errors.InvalidRequest(f"a data-plane header of {length} bytes does not fit")
    return view[HEADER_LENGTH.size : end], view[end:]


def decode_request(header: memoryview) -> Envelope:
    """Raises InvalidRequest: not a request this broker knows."""
    try:
        return _REQUESTS.decode(header)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise errors.InvalidRequest(f"a malformed data-plane request: {exc}") from None


def decode_answer(header: memoryview) -> Answer:
    """Raises InvalidRequest: not an answer this client knows."""
    try:
        return _ANSWERS.decode(header)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise errors.InvalidRequest(f"a malformed data-plane answer: {exc}") from None


def arguments(struct: msgspec.Struct) -> dict[str, Any]:
    """A request's (or an answer's) fields by name. ``Produce`` and ``Fetch`` name their fields
    as ``PartitionActor.produce``/``fetch`` name their parameters, and ``Produced``/``Fetched``
    as ``ProduceResult``/``FetchResponse`` name theirs, so one struct describes a call whichever
    transport carries it (checked in tests/test_frames.py)."""
    return msgspec.structs.asdict(struct)


def carried(kind: type[msgspec.Struct], value: Any) -> Any:
    """A struct of ``kind`` with the same-named fields of ``value`` (a result dataclass)."""
    return kind(**{name: getattr(value, name) for name in kind.__struct_fields__})


def failed(exc: BaseException) -> Failed:
    """An error as it crosses the wire: its class name, message and typed fields."""
    if isinstance(exc, errors.BrokerError):
        fields = {name: _plain(getattr(exc, name, None)) for name in exc.fields}
        return Failed(type(exc).__name__, str(exc), fields)
    return Failed("BrokerError", f"unexpected broker failure: {type(exc).__name__}: {exc}")


def raised(failure: Failed) -> errors.BrokerError:
    """The typed error a ``Failed`` answer stands for (an unknown name is a plain
    BrokerError: a newer broker's error never breaks an older client)."""
    cls = getattr(errors, failure.error, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.BrokerError)):
        return errors.BrokerError(failure.message)
    known = {k: v for k, v in failure.fields.items() if k in cls.fields}
    try:
        return cls(failure.message, **known)
    except TypeError:
        return cls(failure.message)


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
