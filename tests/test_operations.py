"""Operating the broker: launcher configs that `ray up` accepts (the service commands that run
on them are tested in test_service.py)."""

from __future__ import annotations

import json
from pathlib import Path

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
