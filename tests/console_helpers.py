"""Shared by the console tests: a broker with the console application in this process
(FastAPI's TestClient), and waiting for what the monitor samples."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import ray_broker as rb
from tests.conftest import start_local_ray

MONITOR_INTERVAL_S = 0.3


def console_broker(data_dir, name: str, **login) -> rb.Broker:
    start_local_ray()
    config = {"security.enabled": True} if login else None
    return rb.connect(
        data_dir=data_dir, namespace=f"{name}-{uuid.uuid4().hex[:8]}", config=config, **login
    )


def test_client(broker: rb.Broker) -> Any:
    """A TestClient on a console app of ``broker`` (closed with ``close_client``)."""
    from fastapi.testclient import TestClient

    from ray_broker.console.app import build_state, create_app

    state = build_state(broker.namespace, dict(broker._settings), MONITOR_INTERVAL_S)
    client = TestClient(create_app(state), base_url="http://127.0.0.1")
    client.console_state = state
    client.cluster = f"/v3/clusters/{state.cluster_id}"
    return client


def close_client(client: Any) -> None:
    client.close()
    client.console_state.close()


def eventually(check: Callable[[], Any], timeout_s: float = 30.0, every_s: float = 0.2) -> Any:
    """``check()``'s first truthy answer; fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(every_s)


def new_topic_name() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"
