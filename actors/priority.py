"""Run broker actors at normal CPU priority.

Ray's raylet starts every worker process at niceness 15 (``RAY_worker_niceness``), so that
user tasks yield to drivers and to Ray's own daemons. A broker actor is a server: at niceness 15
on a busy node it waits behind every producer and consumer process it serves, and a record's
time in the partition actor grew from ~1 ms to ~7–10 ms per hop at only 200 msg/s on 2 cores
(``loadtest/latency.py --breakdown``). Broker actors therefore ask for niceness 0 — every thread
of the process, since Linux keeps niceness per thread. Lowering niceness needs ``CAP_SYS_NICE``
(root in most containers); without it the actor keeps Ray's niceness and logs how to change it
for the whole cluster (``RAY_worker_niceness=0`` in the environment of ``ray start``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

NORMAL_NICENESS = 0


def serve_at_normal_priority() -> bool:
    """Set every thread of this process to ``NORMAL_NICENESS``; True if all of them are now.

    Threads started later inherit the niceness of the thread that starts them."""
    try:
        thread_ids = [int(entry.name) for entry in Path("/proc/self/task").iterdir()]
    except OSError:  # not Linux: niceness is per process
        thread_ids = [0]
    lowered = True
    for thread_id in thread_ids:
        try:
            if os.getpriority(os.PRIO_PROCESS, thread_id) > NORMAL_NICENESS:
                os.setpriority(os.PRIO_PROCESS, thread_id, NORMAL_NICENESS)
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        except (PermissionError, OSError) as exc:
            lowered = False
            logger.info(
                "broker actor keeps Ray's worker niceness (%s); start Ray with "
                "RAY_worker_niceness=0 for lower latency under load",
                exc,
            )
            break
    return lowered
