"""``loadtest/bench.py --quick`` runs in the suite so the benchmark never rots: every figure the
README quotes is produced, and none is zero. Speed itself is never asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "loadtest" / "bench.py"


@pytest.mark.usefixtures("ray_session")
def test_quick_bench_reports_every_figure(tmp_path: Path, import_loadtest) -> None:
    import ray

    bench = import_loadtest("bench")
    # Attach to the session's Ray instead of starting a second one on two cores.
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = (out / "bench.jsonl").read_text().splitlines()
    rows = {row["figure"]: row for row in map(json.loads, lines)}
    assert (out / "throughput.png").stat().st_size > 1_000  # the chart was drawn
    for figure, _ in bench.FIGURES:
        assert rows[figure]["ray_broker"] > 0, rows[figure]
        assert rows[figure]["ray_queue"] > 0, rows[figure]
    groups = rows["consumer_groups"]
    assert groups["group_consume"] > 0 and groups["single_consume"] > 0
    assert groups["rebalance_after_leave_s"] > 0 and groups["rebalance_after_kill_s"] > 0
    assert "ray-broker vs ray.util.queue.Queue" in done.stdout


def test_filter_and_push_benchmarks_report_their_figures(shared_broker, import_loadtest) -> None:
    bench_filters = import_loadtest("bench_filters")
    filters = bench_filters.run_filters(shared_broker, 20_000)  # asserts the match counts
    for name in ("server_key_filter", "server_header_filter", "client_poll_filter"):
        assert filters[f"{name}_rec_per_s"] > 0
    # Filtered reads receive the 1% that match, not the whole topic.
    assert filters["server_key_filter_bytes"] * 20 < filters["client_arrow_filter_bytes"]
    topic = f"pb-{uuid.uuid4().hex[:6]}"
    shared_broker.admin().create_topic(topic, partitions=bench_filters.PARTITIONS)
    bench_filters._fill(shared_broker, topic, 5_000)
    assert bench_filters._push_rate(shared_broker, topic, 5_000, 2, "consumer_callable") > 0


@pytest.mark.slow  # ~20 s; the API and pages it times are tested in tests/test_console_*.py
@pytest.mark.usefixtures("ray_session")
def test_console_benchmark_reports_its_figures(import_loadtest) -> None:
    bench_console = import_loadtest("bench_console")
    result = bench_console.run(1_000, 1, 1, settle_s=0.5)
    assert result["api_produce_msgs_s"] > 0 and result["native_send_msgs_s"] > 0
    assert set(result["pages"]) == {"overview", "overview_fragment", "topic", "group"}
    assert all(page["p50_ms"] > 0 for page in result["pages"].values())
    assert result["overview_render_1000_topics_100_groups"]["html_bytes"] > 100_000


@pytest.mark.usefixtures("ray_session")
def test_idle_benchmark_reports_its_figures(import_loadtest) -> None:
    bench_idle = import_loadtest("bench_idle")
    result = bench_idle.run(partitions=1, seconds=0.5, settle_s=0.0)
    for side in ("bare_ray_actor", "partition_actor"):
        assert result[side]["cpu_percent"] >= 0 and result[side]["rss_mib"] > 0
    assert result["partition_actor"]["pandas_loaded"] is False
    assert result["topic_create_s"] > 0
