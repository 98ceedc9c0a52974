"""The consumer's I/O with partition leaders: one long-poll fetch in flight per partition.

Each assigned partition keeps one fetch outstanding (the partition answers as soon as data
arrives) or one fetched slice buffered (``SubscriptionState``); a partition whose slice was
just handed out gets its next fetch before ``poll()`` returns, so that fetch is parked at the
partition while the application handles the records. Fetches go over the data plane or Ray
(``PartitionTransport``); either way a fetch in flight is a ``concurrent.futures.Future``.
Failures are mapped to typed errors here and, when retriable, become a back-off and a
metadata refresh — never a stuck partition.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable
from typing import Any

from ray_broker._ray import call, classify, retrying
from ray_broker.config import ConsumerConfig
from ray_broker.consumer.subscription_state import SubscriptionState
from ray_broker.errors import BrokerError, OffsetOutOfRange
from ray_broker.hops import STAMPS
from ray_broker.metadata import MetadataCache
from ray_broker.partition_transport import PartitionTransport
from ray_broker.storage.ipc import from_ipc
from ray_broker.storage.record_filter import RecordFilter
from ray_broker.structs import FetchResponse, TopicPartition

logger = logging.getLogger(__name__)


class Fetcher:
    """See the module docstring. ``reset(tp, cause)`` places a partition whose position is
    unknown or fell out of the log (the consumer applies its committed offset or reset policy)."""

    def __init__(
        self,
        metadata: MetadataCache,
        config: ConsumerConfig,
        subscriptions: SubscriptionState,
        reset: Callable[[TopicPartition, BrokerError | None], None],
        flt: RecordFilter | None = None,
    ) -> None:
        self._metadata = metadata
        self._filter = flt
        # How traced records' trails name this reader.
        self._reader = (
            f"{config.client_id} (group {config.group_id})" if config.group_id else config.client_id
        )
        self._config = config
        self._subscriptions = subscriptions
        self._reset = reset
        self._transport = PartitionTransport(config.data_plane, lane="fetch")

    def leader_call(self, tp: TopicPartition, method: str, *args: Any) -> Any:
        """Call the partition's leader, following it through failovers for request.timeout.ms."""
        timeout_s = self._config.request_timeout_ms / 1000
        return retrying(
            lambda: call(getattr(self._leader(tp), method), *args, timeout_s=timeout_s),
            time.monotonic() + timeout_s,
            self._config.retry_backoff_ms / 1000,
            lambda _error: self._metadata.forget(tp.topic),  # the leader moved or restarts
        )

    def _leader(self, tp: TopicPartition) -> Any:
        return self._metadata.topic(tp.topic).leader(tp.partition)

    def send_fetches(self) -> None:
        config, subscriptions = self._config, self._subscriptions
        now = time.monotonic()
        patience = (config.fetch_max_wait_ms + config.request_timeout_ms) / 1000
        for tp, _dropped in subscriptions.hung(now, patience):
            self._metadata.forget(tp.topic)  # a hung leader: ask the current one
        for tp in subscriptions.to_fetch(now):
            state = subscriptions.partitions[tp]
            if state.position is None:
                self._reset(tp, None)
            try:
                fetch = self._transport.fetch(
                    self._leader(tp),
                    state.fetch_offset,
                    config.max_partition_fetch_records,
                    config.max_partition_fetch_bytes,
                    config.fetch_max_wait_ms,
                    config.isolation_level == "read_committed",
                    self._filter,
                    self._reader,
                    config.client_id,
                )
            except BrokerError as exc:
                if not exc.retriable:
                    raise
                subscriptions.fetch_failed(tp, now + config.retry_backoff_ms / 1000)
                self._metadata.forget(tp.topic)
                continue
            subscriptions.fetch_sent(tp, fetch, now)

    def await_fetches(self, timeout_s: float) -> None:
        pending = self._subscriptions.in_flight()
        if not pending:
            time.sleep(min(timeout_s, self._config.retry_backoff_ms / 1000))
            return
        concurrent.futures.wait(
            list(pending), timeout=timeout_s, return_when=concurrent.futures.FIRST_COMPLETED
        )
        for fetch, tp in list(pending.items()):
            if fetch.done():
                self._complete(tp, fetch)

    def _complete(self, tp: TopicPartition, fetch: Any) -> None:
        subscriptions = self._subscriptions
        if not subscriptions.is_current(tp, fetch):
            return  # seeked or unassigned meanwhile
        try:
            response: FetchResponse = fetch.result()
        except Exception as exc:  # Ray's own types or the data plane's: classify() maps them
            error = classify(exc)
            if isinstance(error, OffsetOutOfRange):
                subscriptions.fetch_failed(tp, 0.0)
                self._reset(tp, error)
            elif error.retriable:
                backoff = time.monotonic() + self._config.retry_backoff_ms / 1000
                subscriptions.fetch_failed(tp, backoff)
                self._metadata.forget(tp.topic)
            else:
                subscriptions.fetch_failed(tp, 0.0)
                raise error from None
            return
        table = None
        if response.num_records:
            table = from_ipc(response.records_ipc)
            if STAMPS.enabled:
                STAMPS.stamp("consumer_receipt", table.column("offset")[0].as_py())
        subscriptions.fetched(tp, fetch, table, response.high_watermark, response.next_offset)
