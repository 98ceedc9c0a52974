"""The broker side of a push subscription whose handler is a Ray actor method.

Why an actor: records then go partition → dispatcher → handler, and the subscriber's own
process (a driver that may sit on a laptop) is not in the data path. The dispatcher runs the
same ``PushLoop`` as an in-process subscription (``ray_broker/push_loop.py``) on a thread of
its own; ``stats`` and ``close`` are answered beside it (a threaded actor).

A client of the broker that runs as an actor (it connects like any subscriber), so it lives in
the client layer, not among the broker's own actors. It is not detached: it lives as long as
the process that subscribed. If it dies, a share group's locks expire and its records go to
other members; a consumer group rebalances and the next member reads from the last committed
offset — nothing acknowledged is lost.
"""

from __future__ import annotations

import threading
from typing import Any

from ray_broker.errors import BrokerError
from ray_broker.push_loop import ActorTarget, PushLoop


class PushDispatcher:
    def __init__(
        self,
        namespace: str,
        data_dir: str,
        topic: str,
        target: tuple[Any, str],
        credits: int,
        group_type: str,
        options: dict[str, Any],
        login: dict[str, str] | None = None,
    ) -> None:
        import ray_broker as rb

        # A failed start is reported by the first call, as the typed error it is (an actor
        # whose constructor raises only says that it died).
        self._error: BrokerError | None = None
        self._loop: PushLoop | None = None
        # On a secured broker it logs in as the subscriber (whose credentials ``login`` holds).
        self._broker = rb.connect(namespace=namespace, data_dir=data_dir, **(login or {}))
        try:
            self._loop = PushLoop(
                self._broker, topic, ActorTarget(*target), credits, group_type, options
            )
        except BrokerError as exc:
            self._error = exc
            return
        self._thread = threading.Thread(target=self._loop.run, name="push-dispatcher", daemon=True)
        self._thread.start()

    def stats(self) -> dict[str, Any]:
        """Raises the error that stopped the dispatcher from starting."""
        if self._loop is None:
            assert self._error is not None
            raise self._error
        return self._loop.stats()

    def close(self) -> None:
        """Stop fetching, wait for the handler's batches (bounded), answer them, leave."""
        if self._loop is not None:
            self._loop.stop()
            self._thread.join()
        self._broker.close()


def start_dispatcher(
    broker: Any,
    topic: str,
    target: tuple[Any, str],
    credits: int,
    group_type: str,
    options: dict[str, Any],
) -> Any:
    """Start a ``PushDispatcher`` for ``broker``'s namespace and wait until it runs.

    Raises:
        The typed errors of creating its consumer (TopicNotFound, InvalidConfig, InvalidFilter).
    """
    import ray

    from ray_broker._ray import call
    from ray_broker.errors import BrokerNotRunning

    dispatcher = (
        ray.remote(PushDispatcher)
        .options(num_cpus=0, max_concurrency=4, namespace=broker.namespace)
        .remote(
            broker.namespace,
            str(broker.data_dir),
            topic,
            target,
            credits,
            group_type,
            options,
            # A secured broker: the dispatcher logs in as the subscriber (a token-only
            # connection lends its token, which expires with it).
            broker._login or ({"token": broker.session_token()} if broker.secured else None),
        )
    )
    try:
        call(dispatcher.stats, timeout_s=120, unavailable=BrokerNotRunning)
    except BaseException:
        ray.kill(dispatcher)
        raise
    return dispatcher
