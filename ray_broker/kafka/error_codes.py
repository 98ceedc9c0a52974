"""Kafka's error codes, and the one mapping from the broker's typed errors to them.

Kafka clients decide what to do by the code (retry after a metadata refresh, back off, give
up), so the mapping follows what Kafka's broker would answer in the same situation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from enum import IntEnum

from ray_broker import errors as e


class ErrorCode(IntEnum):
    """The codes this listener answers with (Kafka protocol guide, "Error Codes")."""

    UNKNOWN_SERVER_ERROR = -1
    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    MESSAGE_TOO_LARGE = 10
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    INVALID_TOPIC_EXCEPTION = 17
    NOT_ENOUGH_REPLICAS = 19
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20
    INVALID_REQUIRED_ACKS = 21
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    TOPIC_AUTHORIZATION_FAILED = 29
    GROUP_AUTHORIZATION_FAILED = 30
    CLUSTER_AUTHORIZATION_FAILED = 31
    UNSUPPORTED_SASL_MECHANISM = 33
    ILLEGAL_SASL_STATE = 34
    UNSUPPORTED_VERSION = 35
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_REPLICATION_FACTOR = 38
    INVALID_CONFIG = 40
    INVALID_REQUEST = 42
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    INVALID_PRODUCER_EPOCH = 47
    INVALID_TXN_STATE = 48
    INVALID_TRANSACTION_TIMEOUT = 50
    CONCURRENT_TRANSACTIONS = 51
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
    KAFKA_STORAGE_ERROR = 56
    SASL_AUTHENTICATION_FAILED = 58
    NON_EMPTY_GROUP = 68
    GROUP_ID_NOT_FOUND = 69
    FENCED_LEADER_EPOCH = 74
    MEMBER_ID_REQUIRED = 79
    INVALID_RECORD = 87
    THROTTLING_QUOTA_EXCEEDED = 89
    PRODUCER_FENCED = 90


_AUTHORIZATION = {
    "topic": ErrorCode.TOPIC_AUTHORIZATION_FAILED,
    "group": ErrorCode.GROUP_AUTHORIZATION_FAILED,
    "transactional_id": ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}

# Most specific first: subclasses before their bases.
_BY_CLASS: list[tuple[type[BaseException], ErrorCode]] = [
    (e.UnknownTopicOrPartition, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
    (e.TopicNotFound, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
    (e.TopicExists, ErrorCode.TOPIC_ALREADY_EXISTS),
    (e.InvalidTopicName, ErrorCode.INVALID_TOPIC_EXCEPTION),
    (e.InvalidPartitions, ErrorCode.INVALID_PARTITIONS),
    (e.InvalidReplicationFactor, ErrorCode.INVALID_REPLICATION_FACTOR),
    (e.NoOffsetForPartition, ErrorCode.OFFSET_OUT_OF_RANGE),
    (e.OffsetOutOfRange, ErrorCode.OFFSET_OUT_OF_RANGE),
    (e.RecordTooLarge, ErrorCode.MESSAGE_TOO_LARGE),
    (e.InvalidRecord, ErrorCode.INVALID_RECORD),
    (e.NotLeader, ErrorCode.NOT_LEADER_OR_FOLLOWER),
    (e.FencedLeaderEpoch, ErrorCode.NOT_LEADER_OR_FOLLOWER),
    (e.PartitionUnavailable, ErrorCode.LEADER_NOT_AVAILABLE),
    (e.NotEnoughReplicasAfterAppend, ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND),
    (e.NotEnoughReplicas, ErrorCode.NOT_ENOUGH_REPLICAS),
    (e.BrokerBusy, ErrorCode.REQUEST_TIMED_OUT),
    (e.BrokerTimeoutError, ErrorCode.REQUEST_TIMED_OUT),
    (e.BrokerNotRunning, ErrorCode.COORDINATOR_NOT_AVAILABLE),
    (e.KafkaStorageError, ErrorCode.KAFKA_STORAGE_ERROR),
    (e.OutOfOrderSequence, ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER),
    (e.ProducerFenced, ErrorCode.PRODUCER_FENCED),
    (e.TransactionTimedOut, ErrorCode.INVALID_PRODUCER_EPOCH),
    (e.TransactionalIdNotFound, ErrorCode.INVALID_TXN_STATE),
    (e.ConcurrentTransactions, ErrorCode.CONCURRENT_TRANSACTIONS),
    (e.InvalidTransactionTimeout, ErrorCode.INVALID_TRANSACTION_TIMEOUT),
    (e.InvalidTxnState, ErrorCode.INVALID_TXN_STATE),
    (e.GroupNotFound, ErrorCode.GROUP_ID_NOT_FOUND),
    (e.GroupNotEmpty, ErrorCode.NON_EMPTY_GROUP),
    (e.InconsistentGroupProtocol, ErrorCode.INCONSISTENT_GROUP_PROTOCOL),
    (e.IllegalGeneration, ErrorCode.ILLEGAL_GENERATION),
    (e.CommitFailed, ErrorCode.UNKNOWN_MEMBER_ID),
    (e.InvalidGroupId, ErrorCode.INVALID_GROUP_ID),
    (e.InvalidConfig, ErrorCode.INVALID_CONFIG),
    (e.AuthenticationFailed, ErrorCode.SASL_AUTHENTICATION_FAILED),
    (e.QuotaExceeded, ErrorCode.THROTTLING_QUOTA_EXCEEDED),
]


# The listener watches each request (``watching_session_refusals``): when a call was refused
# for the session itself (its user deleted, its session revoked), ``error_code`` marks it, and
# the listener closes the connection after answering — without walking every answer for the
# code. Tasks a handler starts share the mark (a context copy holds the same list).
_SESSION_REFUSED: ContextVar[list[bool] | None] = ContextVar("session_refused", default=None)


@contextmanager
def watching_session_refusals() -> Iterator[list[bool]]:
    """A flag that is ``[True]`` once a refusal of the session was mapped to a Kafka code."""
    flag = [False]
    token = _SESSION_REFUSED.set(flag)
    try:
        yield flag
    finally:
        _SESSION_REFUSED.reset(token)


def error_code(exc: BaseException) -> ErrorCode:
    """The code a Kafka client should see for ``exc`` (anything else: UNKNOWN_SERVER_ERROR,
    which clients do not retry)."""
    if isinstance(exc, e.AuthenticationFailed):
        flag = _SESSION_REFUSED.get()
        if flag is not None:
            flag[0] = True
    if isinstance(exc, e.Unauthorized):
        kind = str(getattr(exc, "resource", "") or "").split(":", 1)[0]
        return _AUTHORIZATION.get(kind, ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
    for cls, code in _BY_CLASS:
        if isinstance(exc, cls):
            return code
    if isinstance(exc, e.BrokerError) and exc.retriable:
        return ErrorCode.REQUEST_TIMED_OUT
    return ErrorCode.UNKNOWN_SERVER_ERROR
