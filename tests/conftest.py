"""Shared fixtures: one real local Ray per test session (bound to 127.0.0.1), and a fresh broker
(own namespace, own data directory) per test that needs one."""

from __future__ import annotations

import importlib
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def start_local_ray() -> None:
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            num_cpus=2,
        )


@pytest.fixture(scope="session")
def _session_ray() -> Iterator[None]:
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def ray_session(_session_ray) -> None:
    """A local single-node Ray, started once and restarted only after a multi-node test."""
    start_local_ray()


@pytest.fixture
def broker(ray_session, tmp_path) -> Iterator[object]:
    import ray_broker as rb

    connection = rb.connect(data_dir=tmp_path / "data", namespace=f"test-{uuid.uuid4().hex[:8]}")
    yield connection
    connection.shutdown()


@pytest.fixture(scope="module")
def shared_broker(_session_ray, tmp_path_factory) -> Iterator[object]:
    """One broker for a whole module whose tests use their own topics and need no fresh
    namespace: starting a broker's actors costs ~2 s a test on two cores."""
    import ray_broker as rb

    start_local_ray()
    data_dir = tmp_path_factory.mktemp("shared-broker")
    connection = rb.connect(data_dir=data_dir, namespace=f"shared-{uuid.uuid4().hex[:8]}")
    yield connection
    connection.shutdown()


@pytest.fixture
def import_loadtest() -> Iterator[Callable[[str], ModuleType]]:
    """Import a ``loadtest/`` script as a module (its imports of sibling scripts resolve)."""
    directory = str(Path(__file__).resolve().parents[1] / "loadtest")
    sys.path.insert(0, directory)
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(directory)


@pytest.fixture
def topic(broker) -> str:
    """A fresh 3-partition topic."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    broker.admin().create_topic(name, partitions=3)
    return name


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--sim-seed", type=int, default=None, help="replay one simulator seed")
    parser.addoption(
        "--sim-seeds", type=int, default=1_000, help="how many simulator seeds the sweep runs"
    )


@pytest.fixture
def sim_seeds(request: pytest.FixtureRequest) -> list[int]:
    seed = request.config.getoption("--sim-seed")
    if seed is not None:
        return [seed]
    return list(range(request.config.getoption("--sim-seeds")))
