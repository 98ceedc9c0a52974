"""ray-broker: a Kafka-class message broker on Ray.

``import ray_broker`` is cheap: the client API (and Ray) load on first use.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ray_broker import errors
from ray_broker.structs import (
    AcknowledgeType,
    Acl,
    BatchMetadata,
    GroupDescription,
    GroupListing,
    MemberDescription,
    OffsetAndTimestamp,
    PartitionInfo,
    PartitionLag,
    QuotaEntity,
    Record,
    RecordMetadata,
    ShareRecord,
    TopicDescription,
    TopicPartition,
    TraceEvent,
    UserDescription,
)

# Ray rewrites loopback addresses to another interface unless this is set before Ray is
# imported; it is harmless otherwise (see ray_broker/runtime.py).
if os.environ.get("RAY_ADDRESS", "127.0.0.1").startswith(("127.0.0.1", "localhost", "auto")):
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

__version__ = "0.1.0"

_LAZY = {
    "connect": "ray_broker.entrypoint",
    "Broker": "ray_broker.broker",
    "Producer": "ray_broker.producer",
    "RecordFuture": "ray_broker.producer",
    "BatchFuture": "ray_broker.producer",
    "Consumer": "ray_broker.consumer",
    "ShareConsumer": "ray_broker.consumer.share_consumer",
    "PushSubscription": "ray_broker.push",
    "RecordFilter": "ray_broker.storage.record_filter",
    "Admin": "ray_broker.admin",
    # Subclassed by applications: importable without reaching into private modules.
    "ConsumerRebalanceListener": "ray_broker.consumer",
    # Ray Data: topics as datasets.
    "read_topic": "ray_broker.data",
    "write_topic": "ray_broker.data",
    "TopicDatasink": "ray_broker.data",
}

if TYPE_CHECKING:
    from ray_broker.admin import Admin
    from ray_broker.broker import Broker
    from ray_broker.consumer import Consumer, ConsumerRebalanceListener
    from ray_broker.consumer.share_consumer import ShareConsumer
    from ray_broker.data import TopicDatasink, read_topic, write_topic
    from ray_broker.entrypoint import connect
    from ray_broker.producer import BatchFuture, Producer, RecordFuture
    from ray_broker.push import PushSubscription
    from ray_broker.storage.record_filter import RecordFilter


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ray_broker' has no attribute {name!r}")


__all__ = [
    "AcknowledgeType",
    "Acl",
    "Admin",
    "BatchFuture",
    "BatchMetadata",
    "Broker",
    "Consumer",
    "ConsumerRebalanceListener",
    "GroupDescription",
    "GroupListing",
    "MemberDescription",
    "OffsetAndTimestamp",
    "PartitionInfo",
    "PartitionLag",
    "Producer",
    "PushSubscription",
    "QuotaEntity",
    "Record",
    "RecordFilter",
    "RecordFuture",
    "RecordMetadata",
    "ShareConsumer",
    "ShareRecord",
    "TopicDatasink",
    "TopicDescription",
    "TopicPartition",
    "TraceEvent",
    "UserDescription",
    "connect",
    "errors",
    "read_topic",
    "write_topic",
]
