"""PNG charts of a ``bench.py`` run's JSON lines (``bench.py --out DIR`` draws them): the
figures against ``ray.util.queue``, the throughput sweeps, the backlog's memory as it grew."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Charts for whatever ``rows`` holds; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    written: list[Path] = []
    throughput = [
        r for r in rows if r.get("ray_queue") and not r["figure"].startswith(("e2e", "per_"))
    ]
    if throughput:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        names = [r["figure"] for r in throughput]
        positions = range(len(names))
        ax.barh(
            [p + 0.2 for p in positions],
            [r["ray_broker"] for r in throughput],
            0.4,
            label="ray-broker",
        )
        ax.barh(
            [p - 0.2 for p in positions],
            [r["ray_queue"] for r in throughput],
            0.4,
            label="ray.util.queue",
        )
        ax.set_yticks(list(positions), names)
        ax.set_xscale("log")
        ax.set_xlabel("records/s (log scale)")
        ax.legend()
        written.append(_save(fig, out / "throughput.png"))
    sweeps = [r for r in rows if r["figure"] == "sweep"]
    if sweeps:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        labels = [
            f"{r['partitions']}p {r['value_bytes']}B{' keyed' if r['keyed'] else ''}"
            for r in sweeps
        ]
        positions = range(len(labels))
        ax.bar(
            [p - 0.2 for p in positions],
            [r["produce_mb_per_s"] for r in sweeps],
            0.4,
            label="produce",
        )
        ax.bar(
            [p + 0.2 for p in positions],
            [r["consume_mb_per_s"] for r in sweeps],
            0.4,
            label="consume",
        )
        ax.set_xticks(list(positions), labels, rotation=30, ha="right")
        ax.set_ylabel("MB/s")
        ax.legend()
        written.append(_save(fig, out / "sweeps.png"))
    backlog = [r for r in rows if r["figure"] == "backlog"]
    if backlog:
        samples = backlog[-1]["samples"]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(
            [s["records"] / 1e6 for s in samples],
            [s["broker_pss_bytes"] / 2**30 for s in samples],
            marker="o",
        )
        ax.set_xlabel("backlog (million records)")
        ax.set_ylabel("broker memory, PSS (GiB)")
        ax.set_ylim(bottom=0)
        written.append(_save(fig, out / "backlog_memory.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
