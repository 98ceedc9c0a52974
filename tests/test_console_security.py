"""The console and its API on a secured broker: HTTP Basic and bearer tokens become the user's
broker session, the broker's ACLs decide, the login form gives a strict cookie, and nothing is
shown or changed without logging in."""

from __future__ import annotations

import base64
import re

import pytest

import ray_broker as rb
from tests.console_helpers import close_client, console_broker, new_topic_name
from tests.console_helpers import test_client as make_client

ADMIN = ("root", "root-pw")
READER = ("reader", "reader-pw")


def basic(user: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(":".join(user).encode()).decode()}


@pytest.fixture(scope="module")
def secured(_session_ray, tmp_path_factory):
    broker = console_broker(
        tmp_path_factory.mktemp("secured-console"), "secure", username=ADMIN[0], password=ADMIN[1]
    )
    admin = broker.admin()
    admin.create_user(*READER)
    client = make_client(broker)
    client.broker = broker
    client.readable = new_topic_name()
    client.hidden = new_topic_name()
    admin.create_topic(client.readable, 1)
    admin.create_topic(client.hidden, 1)
    admin.create_acls([rb.Acl("User:reader", "topic", client.readable, "read")])
    yield client
    close_client(client)
    broker.shutdown()


def test_without_credentials_the_api_asks_for_them(secured):
    answer = secured.get(f"{secured.cluster}/topics")
    assert answer.status_code == 401 and answer.json()["error"] == "AuthenticationFailed"
    assert answer.headers["WWW-Authenticate"].startswith("Basic")
    wrong = secured.get(f"{secured.cluster}/topics", headers=basic(("root", "nope")))
    assert wrong.status_code == 401
    garbage = secured.get(f"{secured.cluster}/topics", headers={"Authorization": "Basic !!!"})
    assert garbage.status_code == 401


def test_each_user_sees_and_does_what_the_broker_allows(secured):
    names = lambda user: [  # noqa: E731
        t["topic_name"]
        for t in secured.get(f"{secured.cluster}/topics", headers=basic(user)).json()["data"]
    ]
    assert {secured.readable, secured.hidden} <= set(names(ADMIN))
    assert names(READER) == [secured.readable]
    refused = secured.post(
        f"{secured.cluster}/topics/{secured.readable}/records",
        json={"value": {"data": 1}},
        headers=basic(READER),
    )
    assert refused.status_code == 403 and refused.json()["error"] == "Unauthorized"
    hidden = secured.get(f"{secured.cluster}/topics/{secured.hidden}", headers=basic(READER))
    assert hidden.status_code == 403
    written = secured.post(
        f"{secured.cluster}/topics/{secured.readable}/records",
        json={"value": {"type": "STRING", "data": "from root"}},
        headers=basic(ADMIN),
    )
    assert written.status_code == 200
    read = secured.get(
        f"{secured.cluster}/topics/{secured.readable}/partitions/0/records", headers=basic(READER)
    )
    assert read.status_code == 200 and read.json()["data"][0]["value"]["data"] == "from root"
    users = secured.get(f"{secured.cluster}/users", headers=basic(READER))
    assert users.status_code == 403
    acls = secured.get(f"{secured.cluster}/acls", headers=basic(ADMIN)).json()["data"]
    assert {"principal": "User:reader", "resource_name": secured.readable}.items() <= acls[
        0
    ].items()


def test_a_bearer_session_token_acts_as_its_user(secured):
    reader = rb.connect(namespace=secured.broker.namespace, username=READER[0], password=READER[1])
    token = reader.session_token()
    headers = {"Authorization": f"Bearer {token}"}
    listed = secured.get(f"{secured.cluster}/topics", headers=headers).json()["data"]
    assert [t["topic_name"] for t in listed] == [secured.readable]
    forged = secured.get(f"{secured.cluster}/topics", headers={"Authorization": "Bearer rbt1.x.y"})
    assert forged.status_code == 401
    reader.close()


def test_admins_manage_users_acls_and_quotas_over_the_api(secured):
    made = secured.post(
        f"{secured.cluster}/users",
        json={"name": "writer", "password": "w-pw"},
        headers=basic(ADMIN),
    )
    assert made.status_code == 201
    acl = {
        "principal": "User:writer",
        "resource_type": "topic",
        "resource_name": secured.readable,
        "operation": "write",
    }
    assert (
        secured.post(f"{secured.cluster}/acls", json=acl, headers=basic(ADMIN)).status_code == 201
    )
    wrote = secured.post(
        f"{secured.cluster}/topics/{secured.readable}/records",
        json={"value": {"data": 2}},
        headers=basic(("writer", "w-pw")),
    )
    assert wrote.status_code == 200
    quota = secured.post(
        f"{secured.cluster}/quotas",
        json={"user": "writer", "values": {"producer_byte_rate": 1_000_000}},
        headers=basic(ADMIN),
    )
    assert quota.status_code == 200 and quota.json()["values"]["producer_byte_rate"] == 1_000_000
    bad = secured.post(
        f"{secured.cluster}/quotas",
        json={"user": "writer", "values": {"bananas": 1}},
        headers=basic(ADMIN),
    )
    assert bad.status_code == 400 and bad.json()["error"] == "InvalidAcl"
    deleted = secured.delete(f"{secured.cluster}/acls?principal=User:writer", headers=basic(ADMIN))
    assert len(deleted.json()["data"]) == 1
    assert (
        secured.delete(f"{secured.cluster}/users/writer", headers=basic(ADMIN)).status_code == 204
    )


def test_console_pages_need_a_login_and_the_cookie_carries_the_user(secured):
    secured.cookies.clear()
    redirected = secured.get("/console", follow_redirects=False)
    assert redirected.status_code == 303 and redirected.headers["location"].startswith(
        "/console/login"
    )
    failed = secured.post("/console/login", data={"username": "reader", "password": "no"})
    assert failed.status_code == 401 and "rb_session" not in failed.headers.get("set-cookie", "")
    open_redirect = secured.post(
        "/console/login",
        data={"username": READER[0], "password": READER[1], "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert open_redirect.headers["location"] == "/console"
    cookie = open_redirect.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    overview = secured.get("/console")
    assert secured.readable in overview.text and secured.hidden not in overview.text
    # The cookie works for the API's reads; a write needs the CSRF token too.
    assert secured.get(f"{secured.cluster}/topics").status_code == 200
    no_token = secured.post(f"{secured.cluster}/topics", json={"topic_name": new_topic_name()})
    assert no_token.status_code == 403 and "CSRF" in no_token.json()["message"]
    token = re.search(r'name="csrf_token" value="([^"]+)"', overview.text).group(1)
    logout = secured.post("/console/logout", data={"csrf_token": token}, follow_redirects=False)
    assert logout.status_code == 303
    assert secured.get("/console", follow_redirects=False).status_code == 303


def test_a_tenants_user_sees_neither_nodes_nor_broker_paths(secured):
    from ray_broker._ray import call

    tenant = ("acme/bob", "bob-pw")
    secured.broker.admin().create_user(*tenant)
    assert secured.get(f"{secured.cluster}/brokers", headers=basic(tenant)).status_code == 403
    assert secured.get(f"{secured.cluster}/brokers", headers=basic(ADMIN)).status_code == 200
    as_tenant = rb.connect(
        namespace=secured.broker.namespace, username=tenant[0], password=tenant[1]
    )
    try:
        seen = call(as_tenant._controller.broker_config, timeout_s=60)
        assert "log.dirs" not in seen and "kafka.listeners" not in seen
        assert "super.users" not in seen and "delay.max.ms" in seen
        with pytest.raises(rb.errors.Unauthorized):
            as_tenant.admin().describe_cluster()
    finally:
        as_tenant.close()
    assert "log.dirs" in call(secured.broker._controller.broker_config, timeout_s=60)


def test_the_api_docs_need_a_login_on_a_secured_broker(secured):
    assert secured.get("/openapi.json").status_code == 401
    assert secured.get("/docs").status_code == 401
    assert "paths" in secured.get("/openapi.json", headers=basic(ADMIN)).json()
    assert secured.get("/docs", headers=basic(ADMIN)).status_code == 200


def test_a_request_for_another_host_name_is_refused(secured):
    from fastapi.testclient import TestClient

    from ray_broker.console.app import allowed_hosts, create_app

    app = create_app(secured.app.state.console, allowed_hosts("127.0.0.1"))
    client = TestClient(app, base_url="http://127.0.0.1")
    assert client.get("/openapi.json", headers=basic(ADMIN)).status_code == 200
    rebound = client.get("/openapi.json", headers={**basic(ADMIN), "Host": "evil.example"})
    assert rebound.status_code == 400
    assert allowed_hosts("0.0.0.0") == ["*"]
