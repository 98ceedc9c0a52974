"""Log shipping: what a logging call costs the application, and how fast records reach the
broker.

    python loadtest/bench_logging.py [--records 200000]

* the cost of ``log.info("order %d paid", i)`` per call (p50, p99, µs) with a
  ``BrokerHandler`` — on a healthy broker, and while the broker is unreachable (shut down:
  twice as many calls as the buffer holds; the rest are dropped and counted) — next to the
  standard library's own non-blocking ``QueueHandler`` measured in the same run (baseline);
* shipping: records per second from the first call to ``flush()`` returning (acknowledged).
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import queue
import statistics
import tempfile
import time
import uuid
from typing import Any

from measure import run_standalone  # loadtest/ is this script's directory


def call_costs(log: logging.Logger, count: int) -> dict[str, float]:
    costs = []
    clock = time.perf_counter_ns
    for i in range(count):
        started = clock()
        log.info("order %d paid", i)
        costs.append(clock() - started)
    cuts = statistics.quantiles(costs, n=100)
    return {"p50_us": round(cuts[49] / 1000, 2), "p99_us": round(cuts[98] / 1000, 2)}


def logger_with(handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger(f"bench-{uuid.uuid4().hex[:6]}")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def run(records: int) -> dict[str, Any]:
    import ray_broker as rb
    from ray_broker.logging import BrokerHandler

    result: dict[str, Any] = {"records": records}
    sink: queue.SimpleQueue = queue.SimpleQueue()
    result["stdlib_queue_handler"] = call_costs(
        logger_with(logging.handlers.QueueHandler(sink)), records
    )
    with tempfile.TemporaryDirectory(prefix="ray-broker-logs-") as data_dir:
        namespace = f"lb-{uuid.uuid4().hex[:6]}"
        broker = rb.connect(data_dir=data_dir, namespace=namespace)
        handler = BrokerHandler("bench-logs", broker=broker, buffer_records=records)
        log = logger_with(handler)
        started = time.perf_counter()
        result["broker_handler_healthy"] = call_costs(log, records)
        assert handler.flush(300)
        result["shipped_records_s"] = round(handler.shipped / (time.perf_counter() - started))
        result["dropped_while_healthy"] = handler.dropped
        broker.shutdown()
        # Twice the buffer: the first half is kept, the second dropped and counted.
        result["broker_handler_unreachable"] = call_costs(log, 2 * records)
        result["dropped_while_unreachable"] = handler.dropped - result["dropped_while_healthy"]
        back = rb.connect(data_dir=data_dir, namespace=namespace)
        handler.flush(120)
        handler.close()
        back.shutdown()
    return result


def print_logging(result: dict[str, Any]) -> None:
    print(f"\nLog shipping ({result['records']:,} calls)")
    for name in ("stdlib_queue_handler", "broker_handler_healthy", "broker_handler_unreachable"):
        cost = result[name]
        print(f"  {name:<30} p50 {cost['p50_us']:>7} µs  p99 {cost['p99_us']:>7} µs")
    print(f"  shipped (to acknowledgement)   {result['shipped_records_s']:>12,} records/s")
    print(f"  dropped while healthy          {result['dropped_while_healthy']:>12,}")
    print(f"  dropped while unreachable      {result['dropped_while_unreachable']:>12,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--json-out", type=str)
    args = parser.parse_args()
    run_standalone("logging", lambda: run(args.records), print_logging, args.json_out)


if __name__ == "__main__":
    main()
