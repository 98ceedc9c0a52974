"""``python -m ray_broker.cli``: the same as ``ray-broker``."""

from ray_broker.cli import app

app()
