"""The ``ray-broker`` command line, in-process against the session's Ray and as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from typer.testing import CliRunner

from ray_broker.cli import app


@pytest.fixture
def cli(ray_session, tmp_path):
    namespace = f"cli-{uuid.uuid4().hex[:6]}"
    runner = CliRunner()

    def run(*args: str, input: str | None = None):
        return runner.invoke(
            app, [*args, "--namespace", namespace, "--data-dir", str(tmp_path)], input=input
        )

    run.namespace = namespace
    yield run
    import ray_broker as rb

    rb.connect(data_dir=tmp_path, namespace=namespace).shutdown()


def test_topic_commands_create_list_describe_delete(cli):
    created = cli("topic", "create", "clicks", "--partitions", "3", "-c", "retention.ms=1000")
    assert created.exit_code == 0, created.output
    assert "3 partitions" in created.output
    assert cli("topic", "list").output.split() == ["clicks"]
    described = cli("topic", "describe", "clicks")
    assert described.exit_code == 0
    assert "retention.ms" in described.output and "1000" in described.output
    assert cli("topic", "delete", "clicks").exit_code == 0
    assert cli("topic", "list").output.split() == []


def test_produce_lines_then_consume_them_from_the_beginning(cli, tmp_path):
    assert cli("topic", "create", "lines").exit_code == 0
    source = tmp_path / "in.txt"
    source.write_text("".join(f"k{i}:line {i}\n" for i in range(50)))
    produced = cli("produce", "lines", "--file", str(source), "--key-separator", ":")
    assert produced.exit_code == 0, produced.output
    assert "Produced 50 records" in produced.output
    consumed = cli("consume", "lines", "--from-beginning", "-n", "50", "--print-key")
    assert consumed.exit_code == 0, consumed.output
    lines = [line for line in consumed.output.splitlines() if "\t" in line]
    assert lines == [f"k{i}\tline {i}" for i in range(50)]
    from_offset = cli(
        "consume", "lines", "--partition", "0", "--offset", "48", "--timeout-ms", "500"
    )
    assert [line for line in from_offset.output.splitlines() if line.startswith("line")] == [
        "line 48",
        "line 49",
    ]


def test_produce_from_stdin(cli):
    assert cli("topic", "create", "stdin").exit_code == 0
    assert cli("produce", "stdin", input="a\nb\n").exit_code == 0
    consumed = cli("consume", "stdin", "--from-beginning", "--timeout-ms", "500")
    assert consumed.output.splitlines()[:2] == ["a", "b"]


def test_cli_errors_are_one_clear_line_and_exit_1(cli):
    bad = cli("topic", "create", "no spaces please")
    assert bad.exit_code == 1
    assert "InvalidTopicName" in bad.output and "Traceback" not in bad.output
    missing = cli("topic", "describe", "ghost")
    assert missing.exit_code == 1 and "TopicNotFound" in missing.output
    bad_config = cli("topic", "create", "x", "-c", "retention.ms=never")
    assert bad_config.exit_code == 1 and "InvalidConfig" in bad_config.output


def test_demo_runs_end_to_end_on_an_embedded_broker():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-m", "ray_broker.cli", "demo", "--records", "50000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "in order per" in done.stdout and "True" in done.stdout
    assert "produce (send_batch)" in done.stdout


def test_group_commands_show_lag_reset_and_delete(cli, tmp_path):
    assert cli("topic", "create", "jobs", "--partitions", "2").exit_code == 0
    assert cli("produce", "jobs", "--partition", "0", input="a\nb\nc\n").exit_code == 0
    consumed = cli("consume", "jobs", "--group", "workers", "--from-beginning", "-n", "2")
    assert consumed.exit_code == 0, consumed.output
    listed = cli("group", "list")
    assert "workers" in listed.output and "Empty" in listed.output
    described = cli("group", "describe", "workers")
    assert described.exit_code == 0, described.output
    assert "total lag: 1" in described.output  # 3 records, 2 consumed and committed on close
    reset = cli("group", "reset-offsets", "workers", "--topic", "jobs", "--to-earliest")
    assert reset.exit_code == 0 and "jobs-0 -> 0" in reset.output
    assert "total lag: 3" in cli("group", "describe", "workers").output
    assert cli("group", "delete", "workers").exit_code == 0
    missing = cli("group", "describe", "workers")
    assert missing.exit_code == 1 and "GroupNotFound" in missing.output


def test_root_options_may_be_written_anywhere_on_the_line() -> None:
    from ray_broker.cli import hoist_global_options

    line = ["topic", "list", "--namespace", "x", "--data-dir=/tmp/d", "--address", "a:1"]
    assert hoist_global_options(line) == [
        "--namespace",
        "x",
        "--data-dir=/tmp/d",
        "--address",
        "a:1",
        "topic",
        "list",
    ]
    assert hoist_global_options(["produce", "t"]) == ["produce", "t"]


def test_share_group_and_dead_letter_commands(cli, tmp_path):
    import json
    import time

    import ray_broker as rb

    assert cli("topic", "create", "jobs").exit_code == 0
    source = tmp_path / "jobs.txt"
    source.write_text("".join(f"job {i}\n" for i in range(5)))
    assert cli("produce", "jobs", "--file", str(source)).exit_code == 0
    listed = cli("--output", "json", "share-group", "list")
    assert json.loads(listed.output) == []
    assert cli("share-group", "describe", "nobody").exit_code == 1  # GroupNotFound, no trace
    broker = rb.connect(data_dir=tmp_path, namespace=cli.namespace)
    consumer = broker.share_consumer(
        "jobs", group_id="w", auto_offset_reset="earliest", share_acknowledgement_mode="explicit"
    )
    records = []
    while len(records) < 5:
        records += [r for rs in consumer.poll(timeout_ms=500).values() for r in rs]
    for record in records:
        consumer.acknowledge(record, "reject" if record.offset < 2 else "accept", error="bad")
    consumer.commit_sync()
    consumer.close()
    deadline = time.monotonic() + 30
    letters: list = []
    while len(letters) < 2 and time.monotonic() < deadline:
        found = cli("--output", "json", "dlq", "list", "jobs.w.dlq")
        letters = json.loads(found.output) if found.exit_code == 0 else []
    assert [(d["original_offset"], d["reason"], d["value"]) for d in letters] == [
        (0, "rejected", "job 0"),
        (1, "rejected", "job 1"),
    ]
    described = json.loads(cli("--output", "json", "share-group", "describe", "w").output)
    assert described["partitions"][0]["lag"] == 0
    assert described["dead_letter_topics"] == ["jobs.w.dlq"]
    assert "job" in cli("dlq", "list", "jobs.w.dlq").output  # the table form
    assert "Re-drove 2" in cli("dlq", "redrive", "jobs.w.dlq").output
    assert json.loads(cli("--output", "json", "delayed").output) == {"running": False}
