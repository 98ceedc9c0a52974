"""The data plane's frames: headers round-trip, bodies are not copied, malformed frames are
typed errors, and errors cross the wire with their class and fields."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ray_broker import errors, frames


def _payload(parts: list[bytes]) -> bytes:
    data = b"".join(bytes(p) for p in parts)
    (size,) = frames.LENGTH.unpack_from(data)
    assert size == len(data) - frames.LENGTH.size
    return data[frames.LENGTH.size :]


@given(
    correlation=st.integers(0, 2**62),
    epoch=st.integers(-1, 2**31 - 1),
    producer_id=st.none() | st.integers(0, 2**63 - 1),
    sequence=st.integers(0, 2**31 - 1),
    body=st.binary(max_size=2_000),
)
def test_a_produce_request_round_trips_with_its_body(
    correlation: int, epoch: int, producer_id: int | None, sequence: int, body: bytes
) -> None:
    request = frames.Produce(producer_id, 3, sequence, -1, True, False, "client")
    parts = frames.frame(frames.Envelope(correlation, epoch, request), body)
    header, got = frames.split(_payload(parts))
    envelope = frames.decode_request(header)
    assert envelope == frames.Envelope(correlation, epoch, request)
    assert bytes(got) == body


def test_answers_round_trip_and_bodies_are_passed_not_copied() -> None:
    body = memoryview(bytearray(b"x" * 1_000))
    parts = frames.frame(frames.Answer(7, frames.Fetched(1, 10, 0, 8, 10, 0)), body)
    assert parts[1] is body
    header, got = frames.split(_payload(parts))
    assert frames.decode_answer(header) == frames.Answer(7, frames.Fetched(1, 10, 0, 8, 10, 0))
    assert bytes(got) == bytes(body)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00\x00",
        frames.HEADER_LENGTH.pack(100) + b"short",
        frames.HEADER_LENGTH.pack(frames.HEADER_MAX + 1) + b"x" * 10,
    ],
)
def test_a_frame_whose_header_does_not_fit_is_refused(payload: bytes) -> None:
    with pytest.raises(errors.InvalidRequest):
        frames.split(payload)


@pytest.mark.parametrize(
    "header",
    [
        b"\xc1",  # not MessagePack
        msgspec.msgpack.encode([1, 2]),  # too short
        msgspec.msgpack.encode([1, -1, {"type": "delete_everything"}]),
        msgspec.msgpack.encode([1, -1, {"type": "fetch", "offset": "zero"}]),
    ],
)
def test_a_malformed_request_is_a_typed_error(header: bytes) -> None:
    with pytest.raises(errors.InvalidRequest):
        frames.decode_request(memoryview(header))


def test_errors_cross_the_wire_with_their_class_and_fields() -> None:
    sent = errors.NotLeader("moved", topic="t", partition=2, leader_epoch=5)
    back = frames.raised(frames.failed(sent))
    assert type(back) is errors.NotLeader and back.retriable
    assert (back.topic, back.partition, back.leader_epoch, str(back)) == ("t", 2, 5, "moved")
    unknown = frames.raised(frames.Failed("SomethingNewer", "from a newer broker"))
    assert type(unknown) is errors.BrokerError and "newer" in str(unknown)
    not_ours = frames.raised(frames.Failed("Exception", "no"))
    assert type(not_ours) is errors.BrokerError
    plain = frames.failed(ZeroDivisionError("boom"))
    assert plain.error == "BrokerError" and "ZeroDivisionError" in plain.message


@pytest.mark.parametrize(
    ("struct", "target"),
    [
        ("Produce", "produce"),
        ("Fetch", "fetch"),
        ("Produced", "ProduceResult"),
        ("Fetched", "FetchResponse"),
    ],
)
def test_frames_name_their_fields_as_the_calls_and_results_they_carry(struct, target) -> None:
    """Both transports build one struct per call and read one per answer by field name."""
    import dataclasses
    import inspect

    from ray_broker import structs
    from ray_broker.actors.partition.actor import PartitionActor

    fields = set(getattr(frames, struct).__struct_fields__)
    if target[0].islower():
        names = set(inspect.signature(getattr(PartitionActor, target)).parameters)
    else:
        names = {f.name for f in dataclasses.fields(getattr(structs, target))}
    assert fields <= names, fields - names
