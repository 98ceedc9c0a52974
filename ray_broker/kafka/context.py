"""What one client connection carries between its requests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ray_broker.kafka.classic_groups import ClassicGroups
from ray_broker.kafka.link import BrokerLink
from ray_broker.kafka.partition_lane import PartitionLane
from ray_broker.kafka.txn_epochs import TransactionEpochs

# The listener answers as broker 0 for every partition (proxy mode, see listener.py).
NODE_ID = 0


@dataclass
class ListenerState:
    """Shared by every connection of one listener."""

    link: BrokerLink
    groups: ClassicGroups
    host: str
    port: int
    cluster_id: str
    security_enabled: bool
    txn_epochs: TransactionEpochs = field(default_factory=TransactionEpochs)


@dataclass
class Connection:
    listener: ListenerState
    peer: str
    session: str = ""  # the broker session token once SASL succeeded ("" with security off)
    principal: str = ""
    session_ends: float = float("inf")  # time.monotonic() when the session token expires
    sasl_mechanism: str | None = None
    sasl_exchange: Any = None  # the SCRAM exchange in progress
    # (topic, partition) -> the previous produce of this connection to it: a connection's
    # writes to one partition land in the order they arrived, as on a Kafka broker.
    produce_turns: dict[tuple[str, int], asyncio.Future[None]] = field(default_factory=dict)
    lanes: dict[tuple[str, int], PartitionLane] = field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        return not self.listener.security_enabled or bool(self.session)
