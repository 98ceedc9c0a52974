"""``connect()``: attach to (or start) a broker and hand out admin, producers and consumers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray_broker.actors.security.access_guard import with_session
from ray_broker.config import (
    CONTROLLER_NAME,
    DEFAULT_NAMESPACE,
    DELAY_SCHEDULER_NAME,
    DELAY_TOPIC,
    GROUP_COORDINATOR_NAME,
    TRANSACTION_COORDINATOR_NAME,
    BrokerConfig,
    default_data_dir,
    parse_config,
)
from ray_broker.edge_actors import (
    CONSOLE_PREFIX,
    KAFKA_LISTENER_PREFIX,
    describe_named,
    stop_named,
)
from ray_broker.errors import AuthenticationFailed, BrokerNotRunning, DataDirInUse, InvalidConfig
from ray_broker.gc_pause import freeze_loaded_heap
from ray_broker.placement import singleton
from ray_broker.runtime import ensure_ray

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 120.0


class Broker:
    """A connection to the broker of one Ray namespace."""

    def __init__(
        self,
        controller: Any,
        coordinator: Any,
        namespace: str,
        info: dict[str, Any],
        owns_ray: bool,
        settings: dict[str, Any] | None = None,
        session: Callable[[], str] | None = None,
        login: dict[str, str] | None = None,
    ) -> None:
        from ray_broker.metadata import MetadataCache

        self.namespace = namespace
        self._settings = dict(settings or {"log.dirs": info["data_dir"]})
        self.data_dir = Path(info["data_dir"])
        # With security on, every handle given out carries the session (actors/access_guard).
        self._session = session
        self._login = login  # for actors this client starts that must log in themselves
        self._controller = with_session(controller, session)
        self._coordinator = with_session(coordinator, session)
        self._owns_ray = owns_ray
        import ray

        self._metadata = MetadataCache(
            self._controller,
            lookup=lambda: with_session(
                ray.get_actor(CONTROLLER_NAME, namespace=namespace), session
            ),
            session=session,
        )
        self._clients: list[Any] = []

    @property
    def secured(self) -> bool:
        return self._session is not None

    def session_token(self) -> str:
        """The current session token, for a worker that should act as this user without the
        password (``rb.connect(token=...)``); it expires with the session.

        Raises:
            AuthenticationFailed: this connection has no session (security is off).
        """
        if self._session is None:
            raise AuthenticationFailed("this broker is not secured: there is no session token")
        return self._session()

    def whoami(self) -> str:
        """The principal this connection acts as (``User:ANONYMOUS`` with security off)."""
        from ray_broker._ray import call

        return call(self._controller.whoami, timeout_s=30, unavailable=BrokerNotRunning)

    def admin(self) -> Any:
        from ray_broker.admin import Admin

        return Admin(
            self._controller, self._coordinator, self._metadata, self.namespace, broker=self
        )

    def producer(self, **options: Any) -> Any:
        """A ``Producer``; options are kafka-python names or Kafka's dotted names.

        Raises:
            InvalidConfig: an unknown option or a bad value.
        """
        from ray_broker.producer import Producer

        producer = Producer(
            self._metadata,
            transactions=self._transaction_coordinator,
            group_coordinator=self._coordinator,
            delays=self._delay_scheduler,
            **options,
        )
        self._clients.append(producer)
        return producer

    def consumer(self, *topics: str, **options: Any) -> Any:
        """A ``Consumer`` of ``topics``: joins group ``group_id`` if given, else reads every
        partition.

        Raises:
            InvalidConfig, TopicNotFound.
        """
        from ray_broker.consumer import Consumer

        consumer = Consumer(self._metadata, topics, self._coordinator, **options)
        self._clients.append(consumer)
        return consumer

    def share_consumer(self, *topics: str, **options: Any) -> Any:
        """A ``ShareConsumer``: a member of share group ``group_id`` (required) on ``topics`` —
        queue semantics, each record to one member at a time, acknowledged per record.

        Raises:
            InvalidConfig, TopicNotFound.
        """
        from ray_broker.consumer.share_consumer import ShareConsumer

        consumer = ShareConsumer(self._metadata, topics, **options)
        self._clients.append(consumer)
        return consumer

    def subscribe_push(
        self,
        topic: str,
        *,
        group_id: str,
        handler: Any,
        credits: int = 10,
        group_type: str = "share",
        **options: Any,
    ) -> Any:
        """Push ``topic``'s records to ``handler`` in batches, at most ``credits`` batches at a
        time (RabbitMQ's prefetch); returns a ``PushSubscription`` (``close()``, ``stats()``).

        ``handler`` is a callable (run in this process, one batch after another) or a Ray
        actor method (called from a dispatcher actor beside the broker); it receives one
        ``pyarrow.Table`` (``topic, partition, offset, timestamp, key, value, headers`` and,
        for share groups, ``delivery_count``). Returning acknowledges the batch; raising is a
        failed delivery (see ``ray_broker/push.py``). ``group_type`` is ``"share"`` (queue:
        records spread over subscribers, acknowledged per batch) or ``"consumer"`` (a consumer
        group: partitions split, offsets committed when batches finish). Other options
        (``filter``, ``max_poll_records``, ``auto_offset_reset``…) go to the consumer.

        Raises:
            InvalidConfig: credits outside 1..1000, a bad handler or option; InvalidFilter;
            TopicNotFound.
        """
        from ray_broker.push import subscribe_push

        subscription = subscribe_push(
            self, topic, handler, credits, group_type, {"group_id": group_id, **options}
        )
        self._clients.append(subscription)
        return subscription

    def _transaction_coordinator(self) -> Any:
        """The namespace's transaction coordinator, started by the first transactional
        producer (brokers that never use transactions run no such actor)."""
        from ray_broker.actors.coordination.transaction_coordinator import TransactionCoordinator

        return with_session(
            singleton(
                TransactionCoordinator,
                TRANSACTION_COORDINATOR_NAME,
                self._settings,
                self.namespace,
            ),
            self._session,
        )

    @property
    def settings(self) -> dict[str, Any]:
        """The broker settings this connection was opened with (``log.dirs`` is the running
        broker's data directory, whatever the caller passed)."""
        return dict(self._settings)

    def start_delay_scheduler(self, timeout_s: float = 120.0) -> None:
        """Start delayed delivery now, so that the first delayed record is on time.

        Without it the first ``send(delay_ms=...)`` starts the scheduler (its schedule topic,
        its consumer and its transactional producer: seconds on two cores), and a short delay
        runs out before the scheduler serves: that first record arrives late by the start-up
        time. ``ray-broker start`` calls this for the brokers it starts.

        Raises:
            BrokerNotRunning: the scheduler did not start serving within ``timeout_s``.
        """
        from ray_broker._ray import call

        self._delay_scheduler()
        serving = call(
            self._scheduler().serving,
            timeout_s,
            timeout_s=timeout_s + 30,
            unavailable=BrokerNotRunning,
        )
        if not serving:
            raise BrokerNotRunning(f"the delay scheduler did not start within {timeout_s} s")

    def _scheduler(self) -> Any:
        """The namespace's delay scheduler (started if none runs), calls carrying our session."""
        from ray_broker.delay_scheduler import DelayScheduler

        return with_session(
            singleton(DelayScheduler, DELAY_SCHEDULER_NAME, self._settings, self.namespace),
            self._session,
        )

    def _delay_scheduler(self) -> tuple[int, int]:
        """Make sure the schedule topic and the delay scheduler exist (started by the first
        delayed send); returns (delay.max.ms, schedule partitions) of the running broker.

        Raises:
            BrokerNotRunning: the Controller or the scheduler could not be reached.
        """
        from ray_broker._ray import call
        from ray_broker.delay_scheduler import ensure_schedule_topic

        config = parse_config(
            BrokerConfig,
            call(self._controller.broker_config, timeout_s=60, unavailable=BrokerNotRunning),
        )
        ensure_schedule_topic(self._controller, config)
        call(self._scheduler().ready, timeout_s=120, unavailable=BrokerNotRunning)
        partitions = self._metadata.topic(DELAY_TOPIC).num_partitions
        return config.delay_max_ms, partitions

    def kafka_listeners(self) -> list[dict[str, Any]]:
        """The Kafka protocol listeners serving this broker: host, port (the bound one, for a
        listener asked for port 0), open connections, requests served."""
        return describe_named(self.namespace, KAFKA_LISTENER_PREFIX)

    def shutdown(self) -> None:
        """Stop this namespace's broker actors (Controller and partitions), keeping their data.

        Other processes connected to it lose it; the next ``connect()`` recovers from disk.
        """
        import ray

        from ray_broker._ray import call

        self.close_clients()
        # The edges first — Kafka clients and the console reach everything below.
        stop_named(self.namespace, KAFKA_LISTENER_PREFIX)
        stop_named(self.namespace, CONSOLE_PREFIX)
        # Started on first use: stopped if they ever were, the delay scheduler first (it is a
        # client of the transaction coordinator).
        for name in (DELAY_SCHEDULER_NAME, TRANSACTION_COORDINATOR_NAME):
            try:
                actor = with_session(ray.get_actor(name, namespace=self.namespace), self._session)
            except ValueError:
                continue
            call(actor.shutdown, timeout_s=SHUTDOWN_TIMEOUT_S, unavailable=BrokerNotRunning)
            ray.kill(_unwrapped(actor), no_restart=True)
        call(self._coordinator.shutdown, timeout_s=SHUTDOWN_TIMEOUT_S, unavailable=BrokerNotRunning)
        ray.kill(_unwrapped(self._coordinator), no_restart=True)
        call(self._controller.shutdown, timeout_s=SHUTDOWN_TIMEOUT_S, unavailable=BrokerNotRunning)
        ray.kill(_unwrapped(self._controller), no_restart=True)
        self.close()

    def release(self, client: Any) -> None:
        """Close a client made here and forget it (a long-lived connection that makes a
        consumer per request, as the console does, would otherwise hold them all)."""
        try:
            client.close()
        finally:
            if client in self._clients:
                self._clients.remove(client)

    def close_clients(self) -> None:
        for client in reversed(self._clients):
            try:
                client.close()
            except Exception as exc:  # closing the others matters more than this one's error
                logger.warning("closing %s failed: %s", type(client).__name__, exc)
        self._clients.clear()

    def close(self) -> None:
        """Close the clients made here; stop Ray if ``connect()`` started it (embedded mode)."""
        self.close_clients()
        if self._owns_ray:
            import ray

            ray.shutdown()
            self._owns_ray = False

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def attach(
    address: str | None = None,
    *,
    data_dir: str | Path | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    config: dict[str, Any] | None = None,
    username: str | None = None,
    password: str | None = None,
    mechanism: str = "SCRAM-SHA-256",
    token: str | None = None,
) -> Broker:
    """The client half of ``ray_broker.connect`` (``entrypoint.py``, which documents it):
    attach to the broker's actors in ``namespace``, starting them if none run yet. Edges the
    config names (Kafka listeners) are started by ``connect``, above this layer."""
    settings = dict(config or {})
    if data_dir is not None:
        settings["log.dirs"] = str(Path(data_dir).expanduser().resolve())
    else:
        settings.setdefault("log.dirs", str(default_data_dir(namespace)))
    parse_config(BrokerConfig, settings)  # fail fast, in the caller's process
    owns_ray = ensure_ray(address, namespace)

    import ray

    from ray_broker._ray import call
    from ray_broker.actors.controller.actor import Controller
    from ray_broker.actors.coordination.group_coordinator import GroupCoordinator

    controller = singleton(Controller, CONTROLLER_NAME, settings, namespace)
    try:
        info = call(controller.ready, timeout_s=120, unavailable=BrokerNotRunning)
        if data_dir is not None and Path(info["data_dir"]) != Path(settings["log.dirs"]):
            raise InvalidConfig(
                f"the broker in namespace {namespace!r} already runs with data_dir "
                f"{info['data_dir']}; connect without data_dir or use another namespace"
            )
        # Only once the Controller holds the data directory's lock: the coordinator writes
        # committed offsets there.
        coordinator = singleton(GroupCoordinator, GROUP_COORDINATOR_NAME, settings, namespace)
    except BaseException as exc:
        if isinstance(exc, DataDirInUse):
            # This namespace's Controller refuses to serve: stop it, so the name is free.
            ray.kill(controller, no_restart=True)
        if owns_ray:
            ray.shutdown()
        raise
    # The running broker's directory, whatever this caller passed (the transaction
    # coordinator this connection may start keeps its state there).
    settings["log.dirs"] = info["data_dir"]
    try:
        session = _open_session(controller, namespace, info, username, password, mechanism, token)
    except BaseException:
        if owns_ray:
            ray.shutdown()
        raise
    login = (
        {"username": username, "password": password, "mechanism": mechanism}
        if session is not None and username is not None
        else None
    )
    broker = Broker(controller, coordinator, namespace, info, owns_ray, settings, session, login)
    freeze_loaded_heap()  # Ray and the client are loaded: see ray_broker/gc_pause.py
    return broker


def _open_session(
    controller: Any,
    namespace: str,
    info: dict[str, Any],
    username: str | None,
    password: str | None,
    mechanism: str,
    token: str | None,
) -> Callable[[], str] | None:
    """The session calls will carry: None with security off.

    Raises:
        AuthenticationFailed: see ``connect``.
    """
    from ray_broker._ray import call
    from ray_broker.actors.security.scram import credentials_for
    from ray_broker.session import UserSession, token_session

    if (username is None) != (password is None):
        raise AuthenticationFailed("give both username and password, or neither")
    if not info.get("security_enabled"):
        if username is not None:
            raise AuthenticationFailed(
                f"the broker in namespace {namespace!r} is not secured: connect without a "
                "password, or start a new one with config={'security.enabled': True}"
            )
        return None
    if token is not None and username is None:
        return token_session(token)
    if username is None:
        raise AuthenticationFailed(
            f"the broker in namespace {namespace!r} is secured: connect(username=..., password=...)"
        )
    if not info.get("has_users"):
        call(
            controller.bootstrap_superuser,
            username,
            credentials_for(password),  # type: ignore[arg-type]
            timeout_s=60,
            unavailable=BrokerNotRunning,
        )
    return UserSession(lambda: controller, username, password, mechanism)  # type: ignore[arg-type]


def _unwrapped(handle: Any) -> Any:
    return getattr(handle, "unwrapped", handle)
