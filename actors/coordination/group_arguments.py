"""What the arguments of a group coordinator call must be: a Ray call carries any Python
object, so malformed joins and commits are refused with typed errors before they reach a group."""

from __future__ import annotations

from ray_broker.actors.coordination.group import compile_pattern
from ray_broker.config import (
    MAX_SESSION_TIMEOUT_MS,
    MIN_SESSION_TIMEOUT_MS,
)
from ray_broker.errors import (
    InvalidConfig,
    UnknownTopicOrPartition,
)

PATTERN_MAX_CHARS = 1_000


def check_join_arguments(
    member_id: object,
    instance_id: object,
    client_id: object,
    topics: object,
    pattern: object,
    strategy: object,
    session_timeout_ms: object,
) -> None:
    for name, value in (("member_id", member_id), ("group_instance_id", instance_id)):
        if value is not None and not isinstance(value, str):
            raise InvalidConfig(f"{name} must be a str or None, got {value!r}")
    if not isinstance(client_id, str):
        raise InvalidConfig(f"client_id must be a str, got {client_id!r}")
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        raise InvalidConfig(f"topics must be a list of str, got {topics!r}")
    if pattern is not None:
        if not isinstance(pattern, str) or len(pattern) > PATTERN_MAX_CHARS:
            raise InvalidConfig(
                f"a subscription pattern is a str of at most {PATTERN_MAX_CHARS} characters"
            )
        compile_pattern(pattern)

    if not isinstance(strategy, str):
        raise InvalidConfig(f"partition.assignment.strategy must be a str, got {strategy!r}")
    if (
        not isinstance(session_timeout_ms, int)
        or isinstance(session_timeout_ms, bool)
        or not MIN_SESSION_TIMEOUT_MS <= session_timeout_ms <= MAX_SESSION_TIMEOUT_MS
    ):
        raise InvalidConfig(
            f"session.timeout.ms must be an int in [{MIN_SESSION_TIMEOUT_MS}, "
            f"{MAX_SESSION_TIMEOUT_MS}], got {session_timeout_ms!r}"
        )


def check_offsets(offsets: object) -> None:
    """Raises InvalidConfig / UnknownTopicOrPartition for a malformed commit request."""
    if not isinstance(offsets, dict):
        raise InvalidConfig(f"offsets must be a dict, got {type(offsets).__name__}")
    for key, value in offsets.items():
        if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str)):
            raise InvalidConfig(f"an offset key is (topic, partition), got {key!r}")
        partition = key[1]
        if not isinstance(partition, int) or isinstance(partition, bool) or partition < 0:
            raise UnknownTopicOrPartition(f"partition {key[0]}-{partition!r} does not exist")
        if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str)):
            raise InvalidConfig(f"an offset value is (offset, metadata str), got {value!r}")
