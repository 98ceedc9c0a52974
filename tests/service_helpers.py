"""Helpers several test modules share (test modules never import each other)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a new user's shell: no Ray or pytest settings of this process, its
    own home (so its ``~/.ray`` and ``~/.ray_broker`` are the test's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTEST"))}
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), **extra)
    return env


def run_cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``ray-broker ARGS`` as a user runs it, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "ray_broker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def last_json(completed: subprocess.CompletedProcess) -> Any:
    """The JSON line a ``--output json`` command printed last (Ray may log above it)."""
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def stray_ray_processes(since: float) -> list[str]:
    """Ray processes started after ``since`` that this test process does not own: what a
    service started in a subprocess (and daemonised away from us) left running."""
    me = psutil.Process()
    own = {me.pid} | {p.pid for p in me.children(recursive=True)}
    stray = []
    for process in psutil.process_iter(["cmdline", "name", "create_time", "status"]):
        info = process.info
        if (
            process.pid in own
            or (info["create_time"] or 0) < since
            or info["status"] == psutil.STATUS_ZOMBIE
        ):
            continue
        text = " ".join(info["cmdline"] or ()) or (info["name"] or "")
        if "ray" in text.lower():
            stray.append(f"{process.pid}: {text[:160]}")
    return stray
