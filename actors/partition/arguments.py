"""What the arguments of a partition call must be: values a real client never sends are refused
with a typed error before they reach the log (a Ray call carries any Python object)."""

from __future__ import annotations

from ray_broker.errors import InvalidConfig, InvalidRecord
from ray_broker.structs import AcknowledgeType

ACK_ERROR_MAX_CHARS = 1_000  # a reject's error text, as kept with the record


def is_int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_produce_arguments(
    producer_id: object, producer_epoch: object, base_sequence: object, acks: object
) -> None:
    """Raises InvalidRecord / InvalidConfig for values a real producer never sends."""
    if producer_id is not None and not is_int(producer_id, 0, 2**63 - 1):
        raise InvalidRecord(f"producer_id must be None or an int >= 0, got {producer_id!r}")
    if not is_int(producer_epoch, 0, 2**15 - 1):
        raise InvalidRecord(f"producer_epoch must be an int in [0, 32767], got {producer_epoch!r}")
    if not is_int(base_sequence, 0, 2**31 - 1):
        raise InvalidRecord(f"base_sequence must be an int in [0, 2**31), got {base_sequence!r}")
    if acks not in (0, 1, -1) or isinstance(acks, bool):
        raise InvalidConfig(f"acks must be 0, 1 or -1 (all), got {acks!r}")


def check_fetch_arguments(
    offset: object, max_records: object, max_bytes: object, max_wait_ms: object
) -> None:
    """Raises InvalidConfig for a fetch argument of the wrong type or range."""
    for name, value, low in (
        ("offset", offset, 0),
        ("max_records", max_records, 1),
        ("max_bytes", max_bytes, 1),
        ("max_wait_ms", max_wait_ms, 0),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InvalidConfig(f"fetch {name} must be an int >= {low}, got {value!r}")


def check_epoch_value(epoch: object) -> None:
    """Raises InvalidRecord unless ``epoch`` is a leader epoch."""
    if not is_int(epoch, 0, 2**31 - 1):
        raise InvalidRecord(f"a leader epoch is an int in [0, 2**31), got {epoch!r}")


def check_acknowledgements(
    acks: object,
) -> list[tuple[list[int], AcknowledgeType, str | None]]:
    """A share member's answers, checked: ``[(offsets, kind, error text)]``.

    Raises:
        InvalidConfig: not a list of (list of int offsets, accept|release|reject, text).
    """
    if not isinstance(acks, list):
        raise InvalidConfig(f"acknowledgements are a list, got {type(acks).__name__}")
    out = []
    for entry in acks:
        try:
            offsets, kind, error = entry
            kind = AcknowledgeType(kind)
        except (TypeError, ValueError):
            raise InvalidConfig(
                f"an acknowledgement is (offsets, 'accept'|'release'|'reject', error text), "
                f"got {entry!r}"
            ) from None
        if not isinstance(offsets, list) or not all(
            isinstance(o, int) and not isinstance(o, bool) for o in offsets
        ):
            raise InvalidConfig(f"acknowledged offsets are a list of ints, got {offsets!r}")
        text = None if error is None else str(error)[:ACK_ERROR_MAX_CHARS]
        out.append((offsets, kind, text))
    return out
