"""Push consumption with credits: the broker side hands batches to a handler, RabbitMQ-style.

``broker.subscribe_push(topic, group_id=…, handler=…, credits=N)`` runs a delivery loop that
fetches from the topic as a share-group member (queue semantics, the default) or a
consumer-group member (``group_type="consumer"``, log semantics) and calls ``handler`` with one
batch — a ``pyarrow.Table`` with columns ``topic, partition, offset, timestamp, key, value,
headers`` (and ``delivery_count`` for share groups) — while it holds fewer than ``credits``
batches. A batch's credit returns when the handler returns; then its records are accepted
(share) or become committable (consumer group). So a slow handler is never overrun and memory
stays bounded at ``credits`` batches of ``max_poll_records``.

Where the loop runs: for a Ray actor method handler (``handler=actor.method``) in a
``PushDispatcher`` actor next to the broker, which calls the method with ``.remote()`` — the
subscriber's process is not in the data path; for a plain callable, in a thread of the calling
process, which calls it one batch at a time (``credits`` bounds how many are fetched ahead).

Failures (``PushLoop._failed``):

* the handler raised: a failed delivery, not a dead subscriber. Share groups release the batch
  (delivered again, its delivery count goes on, dead-lettered at ``share.delivery.count.limit``);
  consumer groups rewind the partition to the batch and deliver it again after a back-off, up to
  ``max_delivery_attempts``, then copy it to the dead-letter topic and go on.
* the handler's actor died or restarts: the batch is released (share) or re-read from the last
  committed offset (consumer group); a restarted actor gets it again, and an actor gone for good
  ends the subscription with ``error`` set.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from ray_broker.errors import BrokerError, InvalidConfig
from ray_broker.push_loop import (
    CLOSE_TIMEOUT_S,
    GROUP_TYPES,
    CallableTarget,
    PushLoop,
    actor_method,
)
from ray_broker.push_window import check_credits


class PushSubscription:
    """A running push subscription: ``stats()``, ``error``, ``close()``; a context manager."""

    def __init__(self, loop: PushLoop | None = None, dispatcher: Any = None) -> None:
        self._loop = loop
        self._dispatcher = dispatcher
        self._thread: threading.Thread | None = None
        if loop is not None:
            self._thread = threading.Thread(target=loop.run, name="push-subscription", daemon=True)
            self._thread.start()

    @property
    def error(self) -> BrokerError | None:
        """Why the subscription stopped on its own (its handler actor is gone), else None."""
        if self._loop is not None:
            return self._loop.error
        text = self.stats().get("error")
        return None if text is None else BrokerError(text)

    def stats(self) -> dict[str, Any]:
        """Credits, batches in flight (never above credits), delivered/failed counts."""
        if self._loop is not None:
            return self._loop.stats()
        from ray_broker._ray import call

        return call(self._dispatcher.stats, timeout_s=30)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop fetching, let the handler finish what it holds (up to ``timeout_s``), answer
        it, and leave the group. Batches not finished in time are delivered again."""
        if self._loop is not None:
            self._loop.stop()
            if self._thread is not None:
                self._thread.join(timeout_s + 5)
            return
        if self._dispatcher is not None:
            import ray

            from ray_broker._ray import call

            with contextlib.suppress(BrokerError):
                call(self._dispatcher.close, timeout_s=timeout_s + 5)
            with contextlib.suppress(Exception):
                ray.kill(self._dispatcher)
            self._dispatcher = None

    def __enter__(self) -> PushSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _checked_options(group_type: str, options: dict[str, Any]) -> dict[str, Any]:
    """The consumer options checked here (typed errors in the caller's process), with the
    filter compiled.

    Raises:
        InvalidConfig, InvalidFilter.
    """
    from ray_broker.config import ConsumerConfig, ShareConsumerConfig, client_config
    from ray_broker.filter_syntax import compile_filter

    options = dict(options)
    if "filter" in options:
        options["filter"] = compile_filter(options["filter"])
    check = {k: v for k, v in options.items() if k not in ("filter", "max_delivery_attempts")}
    if group_type == "share":
        if "max_delivery_attempts" in options:
            raise InvalidConfig(
                "max_delivery_attempts is for consumer groups; share groups use the topic's "
                "share.delivery.count.limit"
            )
        client_config(ShareConsumerConfig, check)
    else:
        client_config(ConsumerConfig, check)
    return options


def subscribe_push(
    broker: Any,
    topic: str,
    handler: Any,
    credits: int,
    group_type: str,
    options: dict[str, Any],
) -> PushSubscription:
    """See ``Broker.subscribe_push``."""
    check_credits(credits)
    if group_type not in GROUP_TYPES:
        raise InvalidConfig(f"group_type is 'share' or 'consumer', got {group_type!r}")
    if not options.get("group_id"):
        raise InvalidConfig("a push subscription needs a group_id")
    broker.admin().describe_topic(topic)  # TopicNotFound now, not in the loop
    options = _checked_options(group_type, options)
    target = actor_method(handler)
    if target is not None:
        from ray_broker.push_dispatcher import start_dispatcher  # imports Ray: only when used

        dispatcher = start_dispatcher(broker, topic, target, credits, group_type, options)
        return PushSubscription(dispatcher=dispatcher)
    if not callable(handler):
        raise InvalidConfig(
            f"handler is a callable or a Ray actor method, got {type(handler).__name__}"
        )
    loop = PushLoop(broker, topic, CallableTarget(handler), credits, group_type, dict(options))
    return PushSubscription(loop=loop)


__all__ = ["PushSubscription", "subscribe_push"]
