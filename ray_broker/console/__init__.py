"""The HTTP API (shaped after Confluent's REST Proxy v3) and the web console on top of it.

One FastAPI application (``app.py``) serves both, inside a Ray actor beside the broker
(``server.py``, started by ``ray-broker start --http`` or ``ray-broker console``). It acts for
the person asking: with security on, every request carries that user's broker session (HTTP
Basic or a bearer session token for the API, a login cookie for the console), so the same
actors check the same ACLs and quotas as for a Python client.
"""

from ray_broker.console.deploy import console_url, start_console, stop_consoles

__all__ = ["console_url", "start_console", "stop_consoles"]
