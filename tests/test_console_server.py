"""The console actor over real HTTP: the API answers on the bound port, a console Ray restarts
after its process died serves again on the same port, and the broker's shutdown stops it."""

from __future__ import annotations

import time
import uuid

import httpx


def test_the_console_actor_serves_restarts_on_its_port_and_stops_with_the_broker(
    ray_session, tmp_path
):
    import ray

    import ray_broker as rb
    from ray_broker.console import console_url, start_console
    from ray_broker.console.deploy import NAME_PREFIX
    from ray_broker.edge_actors import named

    broker = rb.connect(data_dir=tmp_path / "data", namespace=f"http-{uuid.uuid4().hex[:8]}")
    served = start_console(broker, "127.0.0.1:0")
    assert served["host"] == "127.0.0.1" and served["port"] > 0
    assert start_console(broker, "127.0.0.1:0")["port"] == served["port"]  # the same actor
    assert console_url(broker.namespace) == [served["url"]]
    base = f"http://127.0.0.1:{served['port']}"
    cluster = httpx.get(f"{base}/v3/clusters").json()["data"][0]["cluster_id"]
    made = httpx.post(
        f"{base}/v3/clusters/{cluster}/topics", json={"topic_name": "web", "partitions_count": 2}
    )
    assert made.status_code == 201, made.text
    entries = [{"id": str(i), "value": {"type": "STRING", "data": f"v{i}"}} for i in range(500)]
    sent = httpx.post(
        f"{base}/v3/clusters/{cluster}/topics/web/records:batch",
        json={"entries": entries},
        timeout=60,
    ).json()
    assert len(sent["successes"]) == 500 and sent["failures"] == []

    (name,) = named(broker.namespace, NAME_PREFIX)
    ray.kill(ray.get_actor(name, namespace=broker.namespace), no_restart=False)
    deadline = time.monotonic() + 60
    while True:
        try:
            page = httpx.get(f"{base}/v3/clusters/{cluster}/topics/web/records?limit=1000")
            if page.status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the console did not come back"
        time.sleep(0.5)
    values = sorted(r["value"]["data"] for r in page.json()["data"])
    assert values == sorted(f"v{i}" for i in range(500))

    broker.shutdown()
    try:
        httpx.get(f"{base}/v3/clusters", timeout=5)
        raise AssertionError("the console still answers after shutdown")
    except httpx.TransportError:
        pass
