"""The one error hierarchy of ray-broker, shared by storage, actors and the client API.

This is a leaf module: it imports nothing of the project and no Ray, so every layer may raise
these errors. Each class names the facts it carries in ``fields`` (``RecordTooLarge.size`` and
``.limit``, ``OffsetOutOfRange.log_start``, ...), so callers read attributes instead of parsing
messages; a field not given is None. They cross actor boundaries: ``__reduce__`` keeps the
message and the fields, and the client re-raises them unwrapped.

``retriable`` tells a client whether retrying the same request later can succeed (a leader moved,
a replica is catching up) or whether the request itself is wrong.
"""

from __future__ import annotations

from typing import Any


def _rebuild(cls: type[BrokerError], message: str, fields: dict[str, Any]) -> BrokerError:
    return cls(message, **fields)


class BrokerError(Exception):
    """Root of every error ray-broker raises on purpose."""

    retriable: bool = False
    fields: tuple[str, ...] = ()

    def __init__(self, message: str = "", **fields: Any) -> None:
        unknown = set(fields) - set(self.fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no fields {sorted(unknown)}")
        super().__init__(message)
        for name in self.fields:
            setattr(self, name, fields.get(name))

    def __str__(self) -> str:
        return str(self.args[0]) if self.args and self.args[0] else (self.__doc__ or "").strip()

    def __reduce__(self) -> tuple[Any, ...]:
        message = str(self.args[0]) if self.args else ""
        return _rebuild, (type(self), message, {n: getattr(self, n) for n in self.fields})


class BrokerTimeoutError(BrokerError, TimeoutError):
    """A request did not complete within its deadline."""

    fields = ("topic", "partition")

    retriable = True


# --- bad requests -------------------------------------------------------------------------------


class InvalidRecord(BrokerError, ValueError):
    """A record or batch does not fit the record schema or the topic's rules."""


class RecordTooLarge(BrokerError, ValueError):
    """A record is larger than the topic's max.message.bytes."""

    fields = ("topic", "size", "limit")


class OffsetOutOfRange(BrokerError, IndexError):
    """The requested offset lies outside [log start offset, log end offset]."""

    fields = ("topic", "partition", "offset", "log_start", "log_end")


class InvalidConfig(BrokerError, ValueError):
    """A configuration key is unknown or its value is not allowed."""

    fields = ("key", "value")


class InvalidTopicName(BrokerError, ValueError):
    """A topic name breaks Kafka's naming rules."""

    fields = ("topic",)


class InvalidGroupId(InvalidConfig):
    """A consumer group id is empty, too long, or has control characters."""

    fields = ("key", "value", "group_id")


class InvalidPartitions(BrokerError, ValueError):
    """A partition count or partition number is not allowed."""

    fields = ("topic", "partition")


class InvalidReplicationFactor(BrokerError, ValueError):
    """The replication factor is below 1 or above the number of live nodes."""

    fields = ("requested", "available")


class SerializationError(BrokerError, TypeError):
    """A key or value is not bytes and no serializer was given for it, or a deserializer failed
    on a consumed record (then ``topic``, ``partition`` and ``offset`` say which)."""

    fields = ("topic", "partition", "offset")


class TopicNotFound(BrokerError, LookupError):
    """The topic does not exist (and auto-creation is off)."""

    fields = ("topic",)


class UnknownTopicOrPartition(TopicNotFound):
    """The topic or the partition number does not exist."""

    fields = ("topic", "partition")


class TopicExists(BrokerError):
    """A topic with that name already exists."""

    fields = ("topic",)


# --- broker state -------------------------------------------------------------------------------


class CorruptSegment(BrokerError):
    """A sealed segment file cannot be read or breaks the log's invariants."""

    fields = ("path",)


class KafkaStorageError(BrokerError, OSError):
    """The log directory cannot be written or read."""

    fields = ("path",)


class DataDirInUse(KafkaStorageError):
    """Another broker (namespace or process) owns this data directory; use another one."""

    fields = ("path",)


class NotLeader(BrokerError):
    """This replica is not the partition's leader; refresh metadata and retry."""

    fields = ("topic", "partition", "leader_epoch")

    retriable = True


class FencedLeaderEpoch(BrokerError):
    """The request carried a leader epoch older than the partition's current one."""

    fields = ("topic", "partition", "leader_epoch")

    retriable = True


class PartitionUnavailable(BrokerError):
    """The partition's actor is down or restarting; retry after a short back-off."""

    fields = ("topic", "partition")

    retriable = True


class LeaderUnreachable(PartitionUnavailable):
    """The leader's data-plane address cannot be reached (a firewall between nodes?): the
    client sends that leader's requests by Ray calls for a while, then tries again."""

    fields = ("topic", "partition")


class NotEnoughReplicas(BrokerError):
    """Fewer in-sync replicas than min.insync.replicas; the write was not committed."""

    fields = ("topic", "partition", "in_sync", "required")

    retriable = True


class NotEnoughReplicasAfterAppend(NotEnoughReplicas):
    """The write reached the leader, but the in-sync replicas shrank below min.insync.replicas
    before it was committed; retrying is safe with idempotence."""

    fields = ("topic", "partition", "in_sync", "required")


class BrokerBusy(BrokerError):
    """The partition is behind on writing its segments to disk; back off and retry."""

    fields = ("topic", "partition")

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

    fields = ("topic", "partition", "expected", "received")

    retriable = True


class ProducerFenced(BrokerError):
    """A newer producer with the same transactional id took over."""


class InvalidTxnState(BrokerError):
    """A transactional call in the wrong state (commit without begin, a transactional send
    outside a transaction, offsets without a group); the message names the state and the fix."""


class InvalidTransactionTimeout(InvalidTxnState):
    """``transaction.timeout.ms`` is outside what the coordinator allows (Kafka's
    INVALID_TRANSACTION_TIMEOUT)."""


class InvalidTransactionalId(InvalidTxnState):
    """A transactional id is empty, too long, or has control or unprintable characters; the
    same rules as a group id."""


class TransactionTimedOut(BrokerError):
    """The transaction ran past transaction.timeout.ms and the coordinator aborted it; call
    ``abort_transaction()`` and begin a new one."""


class TransactionalIdNotFound(BrokerError, LookupError):
    """The coordinator does not know this transactional id; call ``init_transactions()``."""


class ConcurrentTransactions(BrokerError):
    """The previous transaction of this id is still writing its markers; retry shortly."""

    retriable = True


class TransactionAborted(BrokerError):
    """A transactional send failed, so the transaction can only be aborted."""


class GroupNotFound(BrokerError, LookupError):
    """The consumer group does not exist (no members and no committed offsets)."""

    fields = ("group_id",)


class GroupNotEmpty(BrokerError):
    """The operation needs a group without active members; stop its consumers first."""

    fields = ("group_id",)


class InconsistentGroupProtocol(BrokerError, ValueError):
    """The consumer's partition.assignment.strategy differs from the group's."""

    fields = ("group_id",)


class CommitFailed(BrokerError):
    """The commit was refused: the partition is not assigned to this consumer any more."""

    fields = ("group_id", "topic", "partition")


class IllegalGeneration(CommitFailed):
    """The consumer is no longer a member of the group's current generation (it was removed
    after its session timed out, or left); its commits are fenced until it rejoins."""

    fields = ("group_id", "topic", "partition", "generation")


class NoOffsetForPartition(OffsetOutOfRange):
    """The group has no committed offset for the partition and auto_offset_reset is 'none'."""

    fields = ("topic", "partition", "offset", "log_start", "log_end")


class InvalidFilter(BrokerError, ValueError):
    """A consumer's filter does not parse, names a field records do not have, or compares
    values of incompatible types; ``position`` is the 1-based column of the problem in a
    filter string."""

    fields = ("filter", "position")


class InvalidRequest(BrokerError, ValueError):
    """An HTTP request the console or its API cannot take: malformed JSON, a body over the
    size limit, a content type it does not read, a parameter out of range. ``status`` is the
    HTTP status it is answered with (400, 413, 415, 422)."""

    fields = ("status",)


class InvalidRecordState(BrokerError):
    """A share-group acknowledgement names records this member does not hold: never delivered
    to it, already acknowledged, or its acquisition lock expired (the record was or will be
    delivered again). The other acknowledgements of the request were applied."""

    fields = ("group_id", "topic", "partition", "offsets")


class AuthenticationFailed(BrokerError, PermissionError):
    """The credentials or the session token were refused: a wrong password, an unknown user
    (the two are indistinguishable on purpose), a forged, expired or revoked token, or too many
    failed attempts (``retry_after_ms`` says when the next attempt is heard)."""

    fields = ("retry_after_ms",)


class Unauthorized(BrokerError, PermissionError):
    """The principal lacks the ACL for ``operation`` on ``resource`` (``"topic:pay"``). An
    unauthorized describe says this whether or not the resource exists."""

    fields = ("principal", "operation", "resource")


class InvalidAcl(InvalidConfig):
    """A malformed ACL, user or quota specification, or an ACL that reaches outside its
    principal's tenant."""


class QuotaExceeded(BrokerError):
    """The client or user exceeded its quota; back off for the time the message gives."""

    fields = ("throttle_ms",)

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
