"""Peak shaving under Locust: a flash sale against an order front end, with and without the broker.

    python loadtest/peak_shaving.py                # ≈ 4 minutes, report in ./peak-shaving-report/
    python loadtest/peak_shaving.py --quick        # ≈ 1 minute, low rates

**With the broker**, the front end (FastAPI under uvicorn on 127.0.0.1, a Ray driver of its own)
produces every order to a topic with ``acks="all"`` and answers once it is acknowledged; a
consumer group (processes of their own) processes orders at a fixed capacity — simulated work,
``--capacity`` orders/s in all — and commits. **Without the broker**, the same front end calls
the same slow order processing directly (``--capacity`` orders/s, requests waiting at most
``--request-timeout`` seconds for a slot, then 503). Locust drives both with the same shape —
calm, a burst of 15× for a fixed window, calm — as a pure HTTP client in its own process
(its gevent patching does not mix with Ray's threads).

The output folder holds Locust's CSV and HTML per run, ``timeline-*.json`` (per second: orders
accepted and processed, group lag), ``peak_shaving.png`` and ``report.md``: front-end
requests/s, latency and errors with and without the broker; the backlog rising in the burst and
draining after; consumer throughput flat at capacity; and the end check — every accepted order
processed, with the lost and duplicate counts.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 120


@dataclass(frozen=True)
class Scenario:
    """The flash sale. ``shape`` is ``[[seconds, orders/s], ...]``: calm, burst, calm."""

    shape: list[list[int]] = field(default_factory=lambda: [[15, 30], [30, 450], [75, 30]])
    capacity: int = 150  # orders/s the order processing can do, with or without the broker
    consumers: int = 2
    partitions: int = 4
    request_timeout_s: float = 2.0
    drain_timeout_s: float = 180.0

    @classmethod
    def quick(cls) -> Scenario:
        return cls(shape=[[4, 10], [8, 100], [8, 10]], capacity=40, drain_timeout_s=60.0)

    @property
    def seconds(self) -> int:
        return sum(stage[0] for stage in self.shape)

    def window(self, index: int) -> tuple[float, float]:
        """Start and end (seconds into the run) of stage ``index``."""
        start = sum(stage[0] for stage in self.shape[:index])
        return start, start + self.shape[index][0]


# --- the order processing: what a flash sale's backend can do per second -------------------------


class PacedWork:
    """Simulated order processing at a fixed rate (``per_second`` orders/s)."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self.next_free = time.monotonic()

    def wait_time(self) -> float:
        """Reserve the next slot; returns how long to wait for it."""
        now = time.monotonic()
        self.next_free = max(self.next_free, now) + self.interval
        return self.next_free - now


# --- the front end (its own process) --------------------------------------------------------------


def serve_frontend(settings: dict[str, Any]) -> None:
    """FastAPI app: POST /orders → the broker (mode "broker") or the slow processing ("direct")."""
    import uvicorn
    from fastapi import FastAPI, Response

    mode, accepted_path = settings["mode"], settings["accepted_path"]
    accepted = open(accepted_path, "a", buffering=1)  # noqa: SIM115 - open for the process
    app = FastAPI()
    producer = None
    if mode == "broker":
        import ray_broker as rb

        broker = rb.connect(address=settings["address"], namespace=settings["namespace"])
        producer = broker.producer(acks="all", linger_ms=1)
    work = PacedWork(settings["capacity"])
    timeout_s = settings["request_timeout_s"]

    async def acknowledged(order: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def settle(future: Any) -> None:
            def hand_over() -> None:
                if done.done():
                    return
                error = future.exception()
                if error is not None:
                    done.set_exception(error)
                else:
                    done.set_result(future.result())

            loop.call_soon_threadsafe(hand_over)

        assert producer is not None
        key = order["order_id"].encode()
        producer.send(settings["topic"], json.dumps(order).encode(), key=key).add_done_callback(
            settle
        )
        return await asyncio.wait_for(done, timeout_s * 5)

    @app.post("/orders")
    async def place_order(order: dict[str, Any]) -> Any:
        order_id = str(order.get("order_id", ""))
        if not order_id:
            return Response(status_code=400)
        try:
            if producer is not None:
                meta = await acknowledged(order)
                accepted.write(order_id + "\n")
                return {"order_id": order_id, "partition": meta.partition, "offset": meta.offset}
            wait = work.wait_time()
            if wait > timeout_s:  # the backend is saturated: the request would time out
                work.next_free -= work.interval  # give the slot back
                return Response(status_code=503)
            await asyncio.sleep(wait)
            accepted.write(order_id + "\n")
            return {"order_id": order_id, "processed": True}
        except Exception:  # a broker error or timeout: the client sees 503, nothing accepted
            return Response(status_code=503)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(app, host=LOOPBACK, port=settings["port"], log_level="warning", access_log=False)


# --- an order processor of the consumer group (its own process) -----------------------------------


def serve_processor(settings: dict[str, Any]) -> None:
    """Consume orders as a group member at ``capacity`` orders/s, commit, until the stop file."""
    import ray_broker as rb

    broker = rb.connect(address=settings["address"], namespace=settings["namespace"])
    consumer = broker.consumer(
        settings["topic"],
        group_id=settings["group"],
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    work = PacedWork(settings["capacity"])
    stop = Path(settings["stop_path"])
    with open(settings["processed_path"], "a", buffering=1) as processed:
        print("ready", flush=True)
        while not stop.exists():
            batch = consumer.poll(timeout_ms=200, max_records=50)
            for records in batch.values():
                for record in records:
                    time.sleep(work.wait_time())  # the simulated work of one order
                    processed.write(json.loads(record.value)["order_id"] + "\n")
            if batch:
                consumer.commit()
    consumer.close()


# --- orchestration --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def spawn(role: str, settings: dict[str, Any], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, f"--{role}", json.dumps(settings)],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )


def wait_http(port: int, process: subprocess.Popen) -> None:
    import urllib.request

    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the front end exited during start-up (see its log)")
        try:
            urllib.request.urlopen(f"http://{LOOPBACK}:{port}/health", timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the front end did not start")


def count_lines(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        if path.exists():
            with path.open("rb") as handle:
                total += sum(1 for _ in handle)
    return total


def read_ids(paths: list[Path]) -> list[str]:
    ids: list[str] = []
    for path in paths:
        if path.exists():
            ids += path.read_text().split()
    return ids


class Timeline:
    """Per-second samples of accepted and processed orders and the group's lag."""

    def __init__(self, accepted: Path, processed: list[Path], lag: Any) -> None:
        self.samples: list[dict[str, float]] = []
        self._accepted, self._processed, self._lag = accepted, processed, lag
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                lag = self._lag()
            except Exception:  # the sampler must outlive a slow describe_group
                lag = None
            self.samples.append(
                {
                    "t": time.monotonic() - self._started,
                    "accepted": count_lines([self._accepted]),
                    "processed": count_lines(self._processed),
                    "lag": lag,
                }
            )

    def stop(self) -> list[dict[str, float]]:
        self._stop.set()
        self._thread.join()
        return self.samples


def run_locust(port: int, scenario: Scenario, prefix: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RB_SHAPE": json.dumps(scenario.shape)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(HERE / "locustfile.py"),
            "--headless",
            "--host",
            f"http://{LOOPBACK}:{port}",
            "--csv",
            str(prefix),
            "--csv-full-history",
            "--html",
            f"{prefix}.html",
            "--only-summary",
            "--loglevel",
            "WARNING",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=scenario.seconds + 120,
        check=False,
    )


def run_mode(mode: str, broker: Any, address: str, scenario: Scenario, out: Path) -> dict[str, Any]:
    """One run of the flash sale: "broker" or "direct" (no broker)."""
    topic, group = f"orders-{uuid.uuid4().hex[:6]}", f"processing-{uuid.uuid4().hex[:6]}"
    accepted = out / f"accepted-{mode}.txt"
    processed = [out / f"processed-{mode}-{i}.txt" for i in range(scenario.consumers)]
    stop = out / f"stop-{mode}"
    for path in [accepted, *processed, stop]:
        path.unlink(missing_ok=True)
    port = free_port()
    common = {"address": address, "namespace": broker.namespace, "topic": topic}
    processors: list[subprocess.Popen] = []
    lag = lambda: None  # noqa: E731 - no broker, no lag
    if mode == "broker":
        broker.admin().create_topic(topic, partitions=scenario.partitions)
        for i, path in enumerate(processed):
            settings = {
                **common,
                "group": group,
                "capacity": scenario.capacity / scenario.consumers,
                "processed_path": str(path),
                "stop_path": str(stop),
            }
            processors.append(spawn("processor", settings, out / f"processor-{i}.log"))
        for process in processors:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError("an order processor did not start (see its log)")
        admin = broker.admin()

        def lag() -> float | None:
            parts = admin.describe_group(group).partitions
            return float(sum(p.lag for p in parts if p.lag is not None)) if parts else None

    frontend = spawn(
        "frontend",
        {
            **common,
            "mode": mode,
            "port": port,
            "capacity": scenario.capacity,
            "request_timeout_s": scenario.request_timeout_s,
            "accepted_path": str(accepted),
        },
        out / f"frontend-{mode}.log",
    )
    try:
        wait_http(port, frontend)
        timeline = Timeline(accepted, processed if mode == "broker" else [accepted], lag)
        locust = run_locust(port, scenario, out / f"locust-{mode}")
        drained_at = None
        if mode == "broker":
            deadline = time.monotonic() + scenario.drain_timeout_s
            while time.monotonic() < deadline:
                if count_lines(processed) >= count_lines([accepted]):
                    drained_at = time.monotonic()
                    break
                time.sleep(0.5)
        samples = timeline.stop()
    finally:
        stop.touch()
        frontend.terminate()
        for process in [frontend, *processors]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        if mode == "broker":
            broker.admin().delete_topic(topic)
    accepted_ids = read_ids([accepted])
    processed_ids = read_ids(processed) if mode == "broker" else accepted_ids
    (out / f"timeline-{mode}.json").write_text(json.dumps(samples))
    return {
        "mode": mode,
        "locust_returncode": locust.returncode,
        "locust_summary": locust.stdout[-2_000:],
        "accepted": len(set(accepted_ids)),
        "processed": len(set(processed_ids)),
        "lost": len(set(accepted_ids) - set(processed_ids)),
        "duplicates": len(processed_ids) - len(set(processed_ids)),
        "drained": drained_at is not None or mode == "direct",
        "timeline": samples,
        "requests": load_locust_history(out / f"locust-{mode}_stats_history.csv"),
    }


def load_locust_history(path: Path) -> list[dict[str, float]]:
    """Locust's per-second aggregate rows: users, requests/s, failures/s, p50 and p99 (ms)."""
    rows = []
    if not path.exists():
        return rows
    with path.open() as handle:
        for row in csv.DictReader(handle):
            if row.get("Name") != "Aggregated":
                continue
            rows.append({ours: _number(row, theirs) for ours, theirs in LOCUST_COLUMNS.items()})
    return rows


# Locust's stats-history columns, under the names the report uses.
LOCUST_COLUMNS = {
    "timestamp": "Timestamp",
    "users": "User Count",
    "rps": "Requests/s",
    "fps": "Failures/s",
    "p50": "50%",
    "p99": "99%",
    "requests": "Total Request Count",
    "failures": "Total Failure Count",
}


def _number(row: dict[str, str], key: str) -> float:
    try:
        return float(row.get(key, "nan"))
    except ValueError:  # "N/A" before the first request
        return float("nan")


# --- report ---------------------------------------------------------------------------------------


def window_stats(rows: list[dict[str, float]], scenario: Scenario, stage: int) -> dict[str, float]:
    """Latency and errors of the requests in one stage (Locust's per-second rows)."""
    import math

    if not rows:
        return {"p50_ms": math.nan, "p99_ms": math.nan, "failures": math.nan, "requests": math.nan}
    start_ts = rows[0]["timestamp"]
    begin, end = scenario.window(stage)
    inside = [r for r in rows if begin + 2 <= r["timestamp"] - start_ts < end]  # skip ramp-up
    if not inside:
        return {"p50_ms": math.nan, "p99_ms": math.nan, "failures": math.nan, "requests": math.nan}
    p50 = sorted(r["p50"] for r in inside if not math.isnan(r["p50"]))
    p99 = [r["p99"] for r in inside if not math.isnan(r["p99"])]
    return {
        "p50_ms": p50[len(p50) // 2] if p50 else math.nan,
        "p99_ms": max(p99) if p99 else math.nan,
        "failures": inside[-1]["failures"] - inside[0]["failures"],
        "requests": inside[-1]["requests"] - inside[0]["requests"],
    }


def summarize(results: dict[str, dict[str, Any]], scenario: Scenario) -> dict[str, Any]:
    out: dict[str, Any] = {"scenario": asdict(scenario)}
    for mode, result in results.items():
        rows = result["requests"]
        calm, burst = window_stats(rows, scenario, 0), window_stats(rows, scenario, 1)
        peak_lag = max((s["lag"] or 0 for s in result["timeline"]), default=0)
        out[mode] = {
            "calm": calm,
            "burst": burst,
            "total_requests": rows[-1]["requests"] if rows else 0,
            "total_failures": rows[-1]["failures"] if rows else 0,
            "accepted": result["accepted"],
            "processed": result["processed"],
            "lost": result["lost"],
            "duplicates": result["duplicates"],
            "drained": result["drained"],
            "peak_backlog": peak_lag,
        }
    return out


def plot(results: dict[str, dict[str, Any]], scenario: Scenario, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(10, 12), sharex=True)
    for mode, result in results.items():
        rows = result["requests"]
        if rows:
            t0 = rows[0]["timestamp"]
            t = [r["timestamp"] - t0 for r in rows]
            axes[0].plot(t, [r["rps"] for r in rows], label=f"requests/s ({mode})")
            axes[0].plot(t, [r["fps"] for r in rows], "--", label=f"failures/s ({mode})")
            axes[1].plot(t, [r["p99"] for r in rows], label=f"p99 ({mode})")
            axes[1].plot(t, [r["p50"] for r in rows], ":", label=f"p50 ({mode})")
        if mode == "broker":
            samples = result["timeline"]
            t = [s["t"] for s in samples]
            backlog = [s["accepted"] - s["processed"] for s in samples]
            axes[2].plot(t, backlog, label="orders accepted, not yet processed")
            axes[2].plot(t, [s["lag"] or 0 for s in samples], ":", label="group lag (broker)")
            rate = [0.0] + [
                b["processed"] - a["processed"] for a, b in zip(samples, samples[1:], strict=False)
            ]
            axes[3].plot(t, rate, label="orders processed/s")
            axes[3].axhline(scenario.capacity, color="grey", linestyle="--", label="capacity")
    for stage in range(1, len(scenario.shape)):
        for axis in axes:
            axis.axvline(scenario.window(stage)[0], color="lightgrey", linewidth=0.8)
    axes[0].set_ylabel("front end")
    axes[1].set_ylabel("latency (ms)")
    axes[1].set_yscale("log")
    axes[2].set_ylabel("backlog (orders)")
    axes[3].set_ylabel("consumers")
    axes[3].set_xlabel("seconds")
    for axis in axes:
        axis.legend(loc="upper right", fontsize=8)
    fig.suptitle("Flash sale: with and without ray-broker")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(summary: dict[str, Any], out: Path) -> Path:
    scenario = summary["scenario"]
    calm_rate, burst_rate = scenario["shape"][0][1], scenario["shape"][1][1]
    lines = [
        "# Peak shaving: a flash sale with and without ray-broker",
        "",
        f"Shape (seconds, orders/s): {scenario['shape']} — a {burst_rate / calm_rate:.0f}× "
        f"burst; order processing capacity {scenario['capacity']} orders/s; "
        f"{scenario['partitions']} partitions, {scenario['consumers']} consumers.",
        "",
        "| | with the broker | without (direct calls) |",
        "| --- | ---: | ---: |",
    ]
    modes = [m for m in ("broker", "direct") if m in summary]

    def cell(mode: str, *keys: str, fmt: str = "{:,.0f}") -> str:
        value: Any = summary.get(mode, {})
        for key in keys:
            value = value.get(key, float("nan")) if isinstance(value, dict) else float("nan")
        return fmt.format(value) if isinstance(value, (int, float)) else str(value)

    rows = [
        ("front-end p50, calm (ms)", ("calm", "p50_ms"), "{:,.1f}"),
        ("front-end p99, calm (ms)", ("calm", "p99_ms"), "{:,.1f}"),
        ("front-end p50, burst (ms)", ("burst", "p50_ms"), "{:,.1f}"),
        ("front-end p99, burst (ms)", ("burst", "p99_ms"), "{:,.1f}"),
        ("failed requests in the burst", ("burst", "failures"), "{:,.0f}"),
        ("requests / failures, whole run", ("total_requests",), "{:,.0f}"),
        ("failed requests, whole run", ("total_failures",), "{:,.0f}"),
        ("orders accepted", ("accepted",), "{:,.0f}"),
        ("orders processed", ("processed",), "{:,.0f}"),
        ("accepted but lost", ("lost",), "{:,.0f}"),
        ("processed twice", ("duplicates",), "{:,.0f}"),
        ("peak backlog (group lag)", ("peak_backlog",), "{:,.0f}"),
    ]
    for label, keys, fmt in rows:
        values = [cell(m, *keys, fmt=fmt) for m in modes]
        while len(values) < 2:
            values.append("–")
        lines.append(f"| {label} | {values[0]} | {values[1]} |")
    lines += ["", "![flash sale](peak_shaving.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return path


def run(
    broker: Any, address: str, scenario: Scenario, out: Path, modes: tuple[str, ...]
) -> dict[str, Any]:
    """Every requested mode, then the report; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    results = {mode: run_mode(mode, broker, address, scenario, out) for mode in modes}
    summary = summarize(results, scenario)
    plot(results, scenario, out / "peak_shaving.png")
    write_report(summary, out)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("peak-shaving-report"))
    parser.add_argument("--quick", action="store_true", help="≈ 1 minute at low rates")
    parser.add_argument("--capacity", type=int, help="orders/s the processing can do")
    parser.add_argument(
        "--shape", help='JSON [[seconds, orders/s], ...], e.g. "[[15,30],[30,450],[75,30]]"'
    )
    parser.add_argument("--only", choices=("broker", "direct"), help="run one mode")
    parser.add_argument("--frontend", help=argparse.SUPPRESS)
    parser.add_argument("--processor", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.frontend:
        serve_frontend(json.loads(args.frontend))
        return
    if args.processor:
        serve_processor(json.loads(args.processor))
        return
    scenario = Scenario.quick() if args.quick else Scenario()
    if args.capacity or args.shape:
        scenario = Scenario(
            shape=json.loads(args.shape) if args.shape else scenario.shape,
            capacity=args.capacity or scenario.capacity,
        )
    modes = (args.only,) if args.only else ("broker", "direct")

    import ray

    import ray_broker as rb

    with tempfile.TemporaryDirectory(prefix="ray-broker-peak-") as data_dir:
        broker = rb.connect(data_dir=data_dir, namespace=f"peak-{uuid.uuid4().hex[:6]}")
        try:
            summary = run(broker, ray.get_runtime_context().gcs_address, scenario, args.out, modes)
        finally:
            broker.shutdown()
    print((args.out / "report.md").read_text())
    print(json.dumps({"figure": "peak_shaving", **summary}, default=str))


if __name__ == "__main__":
    main()
