"""Operating the broker: launcher configs that `ray up` accepts, and the service commands
(`ray-broker start | status | stop`) run as a user runs them, in subprocesses on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from ray_broker.cli import app
from ray_broker.cluster_config import validate_cluster_config
from ray_broker.errors import InvalidConfig

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER_CONFIGS = [ROOT / "cluster.yaml", ROOT / "deploy" / "aws-cluster.yaml"]


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_configs_validate_as_ray_up_would(path: Path) -> None:
    prepared = validate_cluster_config(path)
    assert prepared["available_node_types"], "ray up fills or keeps node types"
    start_commands = " ".join(prepared["head_start_ray_commands"])
    assert "ray-broker start" in start_commands
    assert "RAY_BROKER_DATA_DIR=/var/lib/ray_broker" in start_commands
    result = CliRunner().invoke(app, ["validate-config", str(path), "--output", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["valid"] == str(path)


def test_a_wrong_launcher_config_is_named_before_ray_up(tmp_path: Path) -> None:
    bad = tmp_path / "cluster.yaml"
    bad.write_text(
        "cluster_name: x\nprovider: {type: local, head_ip: 10.0.0.1, worker_ips: []}\n"
        "min_workers: 2\n"
    )
    with pytest.raises(InvalidConfig, match="min_workers"):
        validate_cluster_config(bad)
    result = CliRunner().invoke(app, ["validate-config", str(bad)])
    assert result.exit_code == 1
    assert "InvalidConfig" in result.output and "Traceback" not in result.output
    missing = CliRunner().invoke(app, ["validate-config", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "InvalidConfig" in missing.output


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ray_broker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_start_status_stop_as_a_user_runs_them(tmp_path: Path) -> None:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("RAY_", "PYTEST"))
    }
    env.update(HOME=str(tmp_path / "home"), RAY_BROKER_DATA_DIR=str(tmp_path / "data"))
    (tmp_path / "home").mkdir()

    started = _cli(env, "start", "--output", "json")
    assert started.returncode == 0, started.stderr
    first = json.loads(started.stdout.strip().splitlines()[-1])
    address = first["address"]
    try:
        assert address.startswith("127.0.0.1:") and first["started_ray"]
        assert not first["already_running"]
        assert first["data_dir"] == str(tmp_path / "data" / "ray_broker")

        again = _cli(env, "start", "--output", "json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout.strip().splitlines()[-1])["already_running"]

        # Every other command finds the running broker without flags.
        created = _cli(env, "topic", "create", "orders", "--partitions", "2")
        assert created.returncode == 0, created.stderr
        served = _cli(env, "console", "--http", "127.0.0.1:0", "--output", "json")
        assert served.returncode == 0, served.stderr
        console_url = json.loads(served.stdout.strip().splitlines()[-1])["url"]
        with urllib.request.urlopen(console_url.replace("/console", "/v3/clusters")) as answer:
            assert json.load(answer)["data"][0]["namespace"] == "ray_broker"
        status = _cli(env, "status", "--output", "json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout.strip().splitlines()[-1])
        [orders] = [t for t in report["topics"] if t["name"] == "orders"]
        assert [p["partition"] for p in orders["partitions"]] == [0, 1]
        assert all(p["leader"] and not p["offline"] for p in orders["partitions"])
        assert report["offline_partitions"] == 0
        [node] = report["nodes"]
        assert node["address"] == "127.0.0.1" and node["leaders"] == 2
        assert node["disk_bytes"] > 0

        stopped = _cli(env, "stop", "--output", "json")
        assert stopped.returncode == 0, stopped.stderr
        assert json.loads(stopped.stdout.strip().splitlines()[-1])["stopped_ray"]
    finally:
        _stop_leftovers(address)

    with pytest.raises(OSError):  # stop stopped the console too
        urllib.request.urlopen(console_url, timeout=5)
    after = _cli(env, "status")
    assert after.returncode == 1
    assert "BrokerNotRunning" in after.stderr and "Traceback" not in after.stderr
    assert (tmp_path / "data" / "ray_broker" / "orders").is_dir(), "stop keeps the data"


def _stop_leftovers(address: str) -> None:
    """Whatever the test's outcome, no Ray of its own outlives it (and it says so)."""
    from ray_broker.service import local_ray_temp_dir, stop_local_ray

    marker = str(local_ray_temp_dir(address))
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(marker in arg for arg in (p.info["cmdline"] or ()))
    ]
    stop_local_ray(address)
    assert not leftovers, f"stop left {len(leftovers)} Ray processes running"
