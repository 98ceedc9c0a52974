"""Ship application and Ray worker logs to a topic: ``BrokerHandler`` (a ``logging.Handler``),
``install()`` for a whole process, ``runtime_env()`` for every actor and task of a Ray job.

    import logging, ray_broker as rb
    from ray_broker.logging import BrokerHandler
    logging.getLogger().addHandler(BrokerHandler("logs", broker=rb.connect()))

Read them with ``ray-broker tail logs``, ``rb.read_topic``, or DuckDB over the Parquet
segments.
"""

from __future__ import annotations

import logging
from typing import Any

from ray_broker.logging.handler import BrokerHandler

__all__ = ["BrokerHandler", "install", "runtime_env", "setup_worker", "uninstall"]

_installed: BrokerHandler | None = None


def install(
    topic: str = "logs",
    *,
    level: int | str = logging.INFO,
    service: str | None = None,
    broker: Any = None,
    **options: Any,
) -> BrokerHandler:
    """Add a ``BrokerHandler`` to the root logger of this process (once: a second call
    returns the first handler) and set the root level to ``level`` if it is stricter.

    Raises: see ``BrokerHandler``.
    """
    global _installed
    if _installed is not None:
        return _installed
    handler = BrokerHandler(topic, broker, level, service=service, **options)
    root = logging.getLogger()
    root.addHandler(handler)
    if root.getEffectiveLevel() > handler.level:
        root.setLevel(handler.level)
    _installed = handler
    return handler


def uninstall() -> None:
    """Remove and close the handler ``install`` added (flushing what it holds)."""
    global _installed
    if _installed is not None:
        logging.getLogger().removeHandler(_installed)
        _installed.close()
        _installed = None


def runtime_env(
    topic: str = "logs",
    *,
    level: int | str = logging.INFO,
    service: str | None = None,
    namespace: str | None = None,
    username: str | None = None,
) -> dict[str, Any]:
    """A job-level Ray ``runtime_env`` under which every worker of the job logs to ``topic``:
    ``ray.init(address=..., runtime_env=runtime_env("logs", service="etl"))``, or the
    ``runtime_env`` of ``ray job submit``. (Ray runs a ``worker_process_setup_hook`` for a
    job's runtime environment only, not for one task's or actor's.)

    Each worker process runs ``setup_worker`` when it starts: it attaches to the broker of
    ``namespace`` and installs a ``BrokerHandler`` keyed by ``service``. On a secured broker
    give ``username``; the password comes from ``RAY_BROKER_PASSWORD`` in the workers'
    environment (set it on the cluster, never in a runtime_env, which Ray shows).
    """
    env = {
        ENV_TOPIC: topic,
        ENV_LEVEL: logging.getLevelName(level) if isinstance(level, int) else level,
    }
    for name, value in ((ENV_SERVICE, service), (ENV_NAMESPACE, namespace), (ENV_USER, username)):
        if value:
            env[name] = value
    return {"worker_process_setup_hook": "ray_broker.logging.setup_worker", "env_vars": env}


ENV_TOPIC = "RAY_BROKER_LOG_TOPIC"
ENV_LEVEL = "RAY_BROKER_LOG_LEVEL"
ENV_SERVICE = "RAY_BROKER_SERVICE"
ENV_NAMESPACE = "RAY_BROKER_NAMESPACE"
ENV_USER = "RAY_BROKER_USER"


def setup_worker() -> None:
    """Ray's ``worker_process_setup_hook`` of ``runtime_env``: install the handler the
    environment describes; it attaches to the broker from its own thread (records wait in its
    buffer meanwhile). A bad setting is said on stderr; the worker runs on without shipping
    its logs rather than failing to start."""
    import os
    import sys

    from ray_broker.config import DEFAULT_NAMESPACE
    from ray_broker.errors import BrokerError

    connect: dict[str, Any] = {"namespace": os.environ.get(ENV_NAMESPACE) or DEFAULT_NAMESPACE}
    if os.environ.get(ENV_USER):
        connect["username"] = os.environ[ENV_USER]
        connect["password"] = os.environ.get("RAY_BROKER_PASSWORD", "")
    try:
        install(
            os.environ.get(ENV_TOPIC, "logs"),
            level=os.environ.get(ENV_LEVEL, "INFO"),
            service=os.environ.get(ENV_SERVICE) or None,
            attach_later=True,  # the hook runs before the worker may call actors
            **connect,
        )
    except BrokerError as exc:
        sys.stderr.write(f"ray_broker.logging: this worker's logs are not shipped: {exc}\n")
