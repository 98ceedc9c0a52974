"""Locust side of the flash-sale scenario (``loadtest/peak_shaving.py`` runs it).

A pure HTTP client: no Ray in this process (Locust's gevent patching does not mix with Ray's
gRPC threads). Every user posts one order per second with a unique id; ``FlashSaleShape`` moves
the number of users — and so the offered orders/s — through the stages in ``RB_SHAPE``
(JSON ``[[seconds, users], ...]``): calm, a burst, calm again.
"""

from __future__ import annotations

import json
import os
import uuid

from locust import FastHttpUser, LoadTestShape, constant_throughput, task

DEFAULT_SHAPE = [[15, 30], [30, 450], [75, 30]]
SPAWN_RATE = 1_000  # users per second: the burst arrives at once, as a flash sale does


class OrderUser(FastHttpUser):
    wait_time = constant_throughput(1)

    @task
    def place_order(self) -> None:
        order = {"order_id": uuid.uuid4().hex, "sku": "flash-42", "quantity": 1}
        self.client.post("/orders", json=order, name="/orders")


class FlashSaleShape(LoadTestShape):
    """Calm → burst → calm, as configured; stops after the last stage."""

    stages = json.loads(os.environ.get("RB_SHAPE", json.dumps(DEFAULT_SHAPE)))

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        for seconds, users in self.stages:
            if elapsed < seconds:
                return users, SPAWN_RATE
            elapsed -= seconds
        return None
