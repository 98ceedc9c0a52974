"""The consumer, by concept: ``consumer`` (the public API), ``subscription_state`` (positions
and buffered slices: plain), ``fetcher`` (fetches in flight), ``group_member`` (membership and
heartbeats) and ``records`` (slices into Records or one Arrow table)."""

from ray_broker.consumer.consumer import Consumer
from ray_broker.consumer.group_member import ConsumerRebalanceListener

__all__ = ["Consumer", "ConsumerRebalanceListener"]
