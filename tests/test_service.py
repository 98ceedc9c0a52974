"""The broker as a service a user starts, submits Ray jobs to, and stops — run as a user runs it:
``ray-broker`` commands and ``ray job submit`` in their own processes, against one Ray the
service starts on 127.0.0.1 with its dashboard, job server and token authentication.

The tests share that service (starting Ray costs ~10 s on two cores) and run in file order;
the last one stops it and checks that nothing of it is left running.
"""

from __future__ import annotations

import concurrent.futures
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from ray_broker.service import stop_local_ray
from tests.service_helpers import last_json, run_cli, stray_ray_processes, user_env

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Service:
    env: dict[str, str]
    home: Path
    data: Path
    started: dict[str, Any]
    since: float

    @property
    def address(self) -> str:
        return self.started["address"]

    @property
    def job_api(self) -> str:
        return self.started["job_api"]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    import ray

    # `address="auto"` (one of the attach cases) finds *the* Ray on the machine; this process's
    # own test Ray would make two. Later tests start theirs again (conftest.start_local_ray).
    ray.shutdown()
    root = tmp_path_factory.mktemp("service")
    home, data = root / "home", root / "data"
    env = user_env(home, RAY_BROKER_DATA_DIR=str(data))
    since = time.time()
    started = last_json(run_cli(env, "start", "--output", "json"))
    yield Service(env, home, data, started, since)
    if any((home / ".ray_broker").glob("service-*.json")):
        stop_local_ray(started["address"])  # a failed test left it running


def _listening_addresses(port: int) -> set[str]:
    return {
        c.laddr.ip
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }


def test_start_runs_ray_with_a_loopback_job_api_and_token_authentication(service: Service):
    started = service.started
    assert started["started_ray"] and not started["already_running"]
    assert started["address"].startswith("127.0.0.1:")
    assert started["data_dir"] == str(service.data / "ray_broker")
    job_api = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", started["job_api"])
    assert job_api, started["job_api"]
    listening = _listening_addresses(int(job_api.group(1)))
    assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
    assert (service.home / ".ray" / "auth_token").is_file(), "start made Ray's token"
    assert [p.name for p in (service.home / ".ray_broker").glob("service-*.json")] == [
        "service-ray_broker.json"
    ]

    again = last_json(run_cli(service.env, "start", "--output", "json"))
    assert again["already_running"] and again["address"] == service.address


def test_other_commands_find_the_started_broker(service: Service):
    created = run_cli(service.env, "topic", "create", "orders", "--partitions", "2")
    assert created.returncode == 0, created.stderr
    served = last_json(run_cli(service.env, "console", "--http", "127.0.0.1:0", "--output", "json"))
    with urllib.request.urlopen(served["url"].replace("/console", "/v3/clusters")) as answer:
        assert answer.status == 200
    service.started["console"] = served["url"]

    report = last_json(run_cli(service.env, "status", "--output", "json"))
    assert report["namespace"] == "ray_broker" and report["address"] == service.address
    assert report["job_api"] == service.job_api
    [orders] = [t for t in report["topics"] if t["name"] == "orders"]
    assert [p["partition"] for p in orders["partitions"]] == [0, 1]
    assert all(p["leader"] and not p["offline"] for p in orders["partitions"])
    [node] = report["nodes"]
    assert node["address"] == "127.0.0.1" and node["leaders"] == 2
    assert node["disk_bytes"] > 0
    shown = run_cli(service.env, "status")
    assert shown.returncode == 0, shown.stderr
    assert f"Ray job API at {service.job_api}" in " ".join(shown.stdout.split())


def _readme_job() -> str:
    """The job the README's "Run it from a Ray job" shows, exactly as printed there."""
    readme = (ROOT / "README.md").read_text()
    [job] = re.findall(r"```python\n(# job\.py\n.*?)```", readme, flags=re.DOTALL)
    return job


def _submit(service: Service, working_dir: Path, *extra: str) -> str:
    completed = subprocess.run(
        [
            str(Path(sys.executable).with_name("ray")),
            "job",
            "submit",
            "--address",
            service.job_api,
            "--working-dir",
            str(working_dir),
            *extra,
            "--",
            "python",
            "job.py",
        ],
        env={**service.env, "RAY_AUTH_MODE": "token"},  # README: the submitting shell's setting
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


def test_ray_job_submit_runs_the_readme_job_against_the_broker(service: Service, tmp_path: Path):
    (tmp_path / "job.py").write_text(_readme_job())
    first = _submit(service, tmp_path)
    assert "orders in the topic: 1000" in first, first[-2000:]
    # The same job with a runtime_env that installs nothing new: its own setting only.
    second = _submit(service, tmp_path, "--runtime-env-json", '{"env_vars": {"ORDERS": "200"}}')
    assert "orders in the topic: 1200" in second, second[-2000:]


ATTACH = """
import json, os, sys

order, how, address = sys.argv[1:4]
if how == "RAY_ADDRESS":
    os.environ["RAY_ADDRESS"] = address
target = {"auto": "auto", "RAY_ADDRESS": None, "explicit": address}[how]
if order == "broker_first":
    import ray_broker as rb
    import ray
else:
    import ray
    import ray_broker as rb
if order == "application_init":
    ray.init(address=target, log_to_driver=False)
broker = rb.connect(target)
with broker.producer(acks="all") as producer:
    meta = producer.send("imports", value=f"{order} {how}".encode()).result(timeout=60)
print(json.dumps({"offset": meta.offset}))
"""

# (import order, how the driver names the cluster)
ATTACH_CASES = [
    ("ray_first", "RAY_ADDRESS"),
    ("ray_first", "explicit"),
    ("ray_first", "auto"),
    ("broker_first", "RAY_ADDRESS"),
    ("broker_first", "explicit"),
    ("application_init", "auto"),
    ("application_init", "explicit"),
]


def test_connect_attaches_in_every_import_order_with_token_auth(service: Service):
    created = run_cli(service.env, "topic", "create", "imports")
    assert created.returncode == 0, created.stderr

    def attach(case: tuple[str, str]) -> subprocess.CompletedProcess:
        order, how = case
        env = dict(service.env)
        if order == "application_init":
            # What Ray itself needs of a driver on this machine that calls ray.init(address=...)
            # (RAY_NOTES): ray_broker cannot set it for a Ray the application started first.
            env.update(RAY_AUTH_MODE="token", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        return subprocess.run(
            [sys.executable, "-c", ATTACH, order, how, service.address],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(ATTACH_CASES, pool.map(attach, ATTACH_CASES), strict=True))
    failed = {case: r.stderr[-1500:] for case, r in results.items() if r.returncode != 0}
    assert not failed, failed
    offsets = sorted(last_json(r)["offset"] for r in results.values())
    assert offsets == list(range(len(ATTACH_CASES)))


def test_each_namespace_keeps_its_own_service_record(service: Service):
    second = last_json(run_cli(service.env, "--namespace", "billing", "start", "--output", "json"))
    assert second["address"] == service.address, "a second broker joins the Ray start started"
    assert second["data_dir"] == str(service.data / "billing")
    records = sorted(p.name for p in (service.home / ".ray_broker").glob("service-*.json"))
    assert records == ["service-billing.json", "service-ray_broker.json"]

    ambiguous = run_cli(service.env, "status")  # no terminal to ask on: it says how to choose
    assert ambiguous.returncode == 1
    said = " ".join(ambiguous.stderr.split())
    assert "--namespace" in said and "'billing'" in said and "'ray_broker'" in said
    assert "Traceback" not in ambiguous.stderr

    billing = last_json(
        run_cli(service.env, "--namespace", "billing", "status", "--output", "json")
    )
    assert billing["namespace"] == "billing" and billing["topics"] == []

    stopped = last_json(run_cli(service.env, "--namespace", "billing", "stop", "--output", "json"))
    assert stopped == {
        "stopped": "billing",
        "address": service.address,
        "stopped_ray": False,
        "still_running_there": ["ray_broker"],
    }
    # The first broker runs on, and is again the one commands find without flags.
    report = last_json(run_cli(service.env, "status", "--output", "json"))
    assert report["namespace"] == "ray_broker"
    assert "orders" in [t["name"] for t in report["topics"]]


def test_stop_leaves_no_ray_process_behind_and_keeps_the_data(service: Service):
    stopped = run_cli(service.env, "stop", "--output", "json")
    report = last_json(stopped)
    assert report["stopped"] == "ray_broker" and report["stopped_ray"]
    assert not list((service.home / ".ray_broker").glob("service-*.json"))
    stray = stray_ray_processes(service.since)
    assert not stray, f"stop left {len(stray)} Ray processes running: {stray}"

    with pytest.raises(OSError):  # the console went with the broker
        urllib.request.urlopen(service.started["console"], timeout=5)
    after = run_cli(service.env, "status")
    assert after.returncode == 1
    assert "BrokerNotRunning" in after.stderr and "Traceback" not in after.stderr
    assert (service.data / "ray_broker" / "orders").is_dir(), "stop keeps the data"
