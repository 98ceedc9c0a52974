"""The one error hierarchy of ray-broker, shared by storage, actors and the client API.

This is a leaf module: it imports nothing of the project and no Ray, so every layer may raise
these errors. They cross actor boundaries, so each class keeps its whole state in ``args`` (the
message) and pickles like a plain ``Exception``; the client re-raises them unwrapped.

``retriable`` tells a client whether retrying the same request later can succeed (a leader moved,
a replica is catching up) or whether the request itself is wrong.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Root of every error ray-broker raises on purpose."""

    retriable: bool = False

    def __init__(self, message: str = "") -> None:
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args and self.args[0] else (self.__doc__ or "").strip()


class BrokerTimeoutError(BrokerError, TimeoutError):
    """A request did not complete within its deadline."""

    retriable = True


# --- bad requests -------------------------------------------------------------------------------


class InvalidRecord(BrokerError, ValueError):
    """A record or batch does not fit the record schema or the topic's rules."""


class RecordTooLarge(BrokerError, ValueError):
    """A record is larger than the topic's max.message.bytes."""


class OffsetOutOfRange(BrokerError, IndexError):
    """The requested offset lies outside [log start offset, log end offset]."""


class InvalidConfig(BrokerError, ValueError):
    """A configuration key is unknown or its value is not allowed."""


class InvalidTopicName(BrokerError, ValueError):
    """A topic name breaks Kafka's naming rules."""


class InvalidGroupId(InvalidConfig):
    """A consumer group id is empty, too long, or has control characters."""


class InvalidPartitions(BrokerError, ValueError):
    """A partition count or partition number is not allowed."""


class InvalidReplicationFactor(BrokerError, ValueError):
    """The replication factor is below 1 or above the number of live nodes."""


class SerializationError(BrokerError, TypeError):
    """A key or value is not bytes and no serializer was given for it."""


class TopicNotFound(BrokerError, LookupError):
    """The topic does not exist (and auto-creation is off)."""


class UnknownTopicOrPartition(TopicNotFound):
    """The topic or the partition number does not exist."""


class TopicExists(BrokerError):
    """A topic with that name already exists."""


# --- broker state -------------------------------------------------------------------------------


class CorruptSegment(BrokerError):
    """A sealed segment file cannot be read or breaks the log's invariants."""


class KafkaStorageError(BrokerError, OSError):
    """The log directory cannot be written or read."""


class DataDirInUse(KafkaStorageError):
    """Another broker (namespace or process) owns this data directory; use another one."""


class NotLeader(BrokerError):
    """This replica is not the partition's leader; refresh metadata and retry."""

    retriable = True


class FencedLeaderEpoch(BrokerError):
    """The request carried a leader epoch older than the partition's current one."""

    retriable = True


class PartitionUnavailable(BrokerError):
    """The partition's actor is down or restarting; retry after a short back-off."""

    retriable = True


class NotEnoughReplicas(BrokerError):
    """Fewer in-sync replicas than min.insync.replicas; the write was not committed."""

    retriable = True


class NotEnoughReplicasAfterAppend(NotEnoughReplicas):
    """The write reached the leader, but the in-sync replicas shrank below min.insync.replicas
    before it was committed; retrying is safe with idempotence."""


class BrokerBusy(BrokerError):
    """The partition is behind on writing its segments to disk; back off and retry."""

    retriable = True


class BrokerNotRunning(BrokerError):
    """No broker is reachable in this Ray namespace (or its Controller is restarting)."""

    retriable = True


class ProducerClosed(BrokerError):
    """The producer was closed; create a new one to send more records."""


class ConsumerClosed(BrokerError):
    """The consumer was closed; create a new one to read more records."""


class OutOfOrderSequence(BrokerError):
    """A producer batch skipped sequence numbers; the producer resends its batches in order."""

    retriable = True


class ProducerFenced(BrokerError):
    """A newer producer with the same transactional id took over."""


class GroupNotFound(BrokerError, LookupError):
    """The consumer group does not exist (no members and no committed offsets)."""


class GroupNotEmpty(BrokerError):
    """The operation needs a group without active members; stop its consumers first."""


class InconsistentGroupProtocol(BrokerError, ValueError):
    """The consumer's partition.assignment.strategy differs from the group's."""


class RebalanceInProgress(BrokerError):
    """The group is rebalancing; poll again and retry after the new assignment."""

    retriable = True


class CommitFailed(BrokerError):
    """The commit was refused: the partition is not assigned to this consumer any more."""


class IllegalGeneration(CommitFailed):
    """The consumer is no longer a member of the group's current generation (it was removed
    after its session timed out, or left); its commits are fenced until it rejoins."""


class NoOffsetForPartition(OffsetOutOfRange):
    """The group has no committed offset for the partition and auto_offset_reset is 'none'."""


class Unauthorized(BrokerError, PermissionError):
    """The principal lacks the ACL for this operation."""


class AuthenticationFailed(BrokerError, PermissionError):
    """The credentials were rejected."""


class QuotaExceeded(BrokerError):
    """The client or user exceeded its quota; back off for the time the message gives."""

    retriable = True


def all_error_classes() -> list[type[BrokerError]]:
    """Every class of the hierarchy, for tests and documentation."""
    found: list[type[BrokerError]] = []
    pending: list[type[BrokerError]] = [BrokerError]
    while pending:
        cls = pending.pop()
        if cls not in found:
            found.append(cls)
            pending.extend(cls.__subclasses__())
    return found
