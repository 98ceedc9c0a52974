"""``connect()``: the one call that opens a broker — the client attaches to (or starts) the
broker's actors, and the edges its config names (Kafka listeners) start beside them.

It sits above the client and the edges so that neither imports the other: the client
(``broker.attach``) never knows a listener exists, and a listener is a client of the broker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray_broker.broker import Broker, attach
from ray_broker.config import DEFAULT_NAMESPACE, parse_kafka_listeners


def connect(
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
    """Attach to the broker in ``namespace``, starting its Controller if none runs yet.

    Without ``address`` (and no ``RAY_ADDRESS``) and outside a Ray job, this starts an embedded
    single-node Ray on 127.0.0.1; ``Broker.close()`` stops it again. Data lives under
    ``data_dir`` (default ``~/.ray_broker/<namespace>``; the root is ``RAY_BROKER_DATA_DIR``).

    A secured broker (``config={"security.enabled": True}`` when it is first started) needs
    ``username``/``password`` (SCRAM, ``mechanism`` SCRAM-SHA-256 or -512) or a ``token`` from
    another connection's ``session_token()``. The first ``username``/``password`` given to a
    secured broker without users becomes its first superuser.

    ``config={"kafka.listeners": "127.0.0.1:9092"}`` also starts the Kafka listeners it names
    (edge actors, restarted by Ray, stopped with the broker).

    Raises:
        InvalidConfig: a bad broker setting, or ``data_dir`` differs from the running broker's.
        DataDirInUse: another broker namespace owns ``data_dir``.
        BrokerNotRunning: the Controller could not be started or reached.
        AuthenticationFailed: a secured broker without credentials, wrong credentials, or
            credentials for a broker without security.
    """
    spec = (config or {}).get("kafka.listeners")
    listeners = parse_kafka_listeners(spec) if spec else []  # refused before anything starts
    broker = attach(
        address,
        data_dir=data_dir,
        namespace=namespace,
        config=config,
        username=username,
        password=password,
        mechanism=mechanism,
        token=token,
    )
    if listeners:
        from ray_broker.kafka.deploy import start_listener  # the Kafka extra, when asked for

        try:
            for host, port in listeners:
                start_listener(namespace, broker.settings, broker.secured, host, port)
        except BaseException:
            broker.close()
            raise
    return broker
