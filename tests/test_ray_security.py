"""The broker on a Ray cluster whose own ports are protected: token authentication and TLS
(Ray's ports otherwise allow code execution to anyone who reaches them, CVE-2023-48022).

A separate ``ray start --head`` on 127.0.0.1 with its own temp dir, certificates made by
openssl, and a client process that secures a broker on it, produces and consumes."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from ray_broker.service import local_ray_processes, start_local_ray, stop_local_ray

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _certificates(directory: Path) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1, as Ray's TLS guide makes them."""
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_crt),
        "-subj",
        "/CN=ray-broker-test-ca",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        "/CN=127.0.0.1",
    )
    extensions = directory / "san.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_crt),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        str(crt),
        "-extfile",
        str(extensions),
    )
    return {
        "RAY_USE_TLS": "1",
        "RAY_TLS_SERVER_CERT": str(crt),
        "RAY_TLS_SERVER_KEY": str(key),
        "RAY_TLS_CA_CERT": str(ca_crt),
    }


CLIENT = textwrap.dedent(
    """
    import json, sys
    import ray_broker as rb

    address, data_dir = sys.argv[1], sys.argv[2]
    broker = rb.connect(address, data_dir=data_dir, namespace="tls",
                        config={"security.enabled": True}, username="root", password="pw")
    broker.admin().create_topic("secure-orders")
    producer = broker.producer(linger_ms=0)
    for i in range(10):
        producer.send("secure-orders", value=b"order-%d" % i).result(timeout=60)
    direct = producer._sender._transport.counts["direct"]
    producer.close()
    consumer = broker.consumer("secure-orders", auto_offset_reset="earliest")
    got = []
    while len(got) < 10:
        for records in consumer.poll(timeout_ms=1000).values():
            got.extend(r.value.decode() for r in records)
    consumer.close()
    refused = ""
    try:
        rb.connect(address, namespace="tls")
    except rb.errors.AuthenticationFailed as exc:
        refused = type(exc).__name__
    print(json.dumps({"got": got, "whoami": broker.whoami(), "anonymous": refused,
                      "direct": direct}))
    broker.shutdown()
    """
)


def _dashboard_http_ports(address: str) -> set[int]:
    """The ports the dashboard was told to serve HTTP on that a process of this Ray listens on
    (without the dashboard, Ray still runs its head process, headless)."""
    processes = local_ray_processes(address)
    asked = {
        int(arg.split("=", 1)[1])
        for process in processes
        for arg in process.cmdline()
        if arg.startswith("--port=") and any("dashboard.py" in a for a in process.cmdline())
    }
    pids = {process.pid for process in processes}
    listening = {
        c.laddr.port
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    }
    return asked & listening


def test_the_broker_runs_on_a_ray_cluster_with_tls_and_token_authentication(tmp_path):
    ray_security = {
        **_certificates(tmp_path),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    # What `ray-broker start --no-dashboard` runs, on 127.0.0.1.
    address = start_local_ray(ray_security, dashboard=False)
    port = int(address.rsplit(":", 1)[1])
    assert _dashboard_http_ports(address) == set(), "--no-dashboard still serves the job API"
    env = {**os.environ, **ray_security, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    try:
        # The GCS port speaks TLS, with a certificate of the cluster's CA.
        context = ssl.create_default_context(cafile=env["RAY_TLS_CA_CERT"])
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        client = subprocess.run(
            [sys.executable, "-c", CLIENT, address, str(tmp_path / "data")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert client.returncode == 0, client.stderr[-3000:]
        report = json.loads(client.stdout.strip().splitlines()[-1])
        assert report["got"] == [f"order-{i}" for i in range(10)]
        assert report["whoami"] == "User:root"
        assert report["anonymous"] == "AuthenticationFailed"
        assert report["direct"] > 0, "records never took the data plane (TLS) under Ray's TLS"
    finally:
        stop_local_ray(address)
