"""The console's pages through FastAPI's TestClient (security off): they render what the
broker holds, escape whatever records and names contain, refuse state changes without the
session's CSRF token, and their live fragments follow the broker."""

from __future__ import annotations

import re

import pytest

from tests.console_helpers import close_client, console_broker, eventually, new_topic_name
from tests.console_helpers import test_client as make_client

XSS = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def console(_session_ray, tmp_path_factory):
    broker = console_broker(tmp_path_factory.mktemp("pages"), "pages")
    client = make_client(broker)
    client.broker = broker
    yield client
    close_client(client)
    broker.shutdown()


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_the_overview_lists_topics_and_sets_a_strict_session_cookie(console):
    name = new_topic_name()
    console.broker.admin().create_topic(name, 2)
    page = eventually(
        lambda: (p := console.get("/console")).status_code == 200 and name in p.text and p
    )
    assert "Content-Security-Policy" in page.headers
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    cookie = page.headers["set-cookie"]
    assert "rb_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    fragment = console.get("/console/fragments/overview")
    assert fragment.status_code == 200 and name in fragment.text and "<html" not in fragment.text


def test_create_and_produce_from_forms_need_the_csrf_token(console):
    token = csrf_of(console.get("/console").text)
    name = new_topic_name()
    forged = console.post(
        "/console/topics", data={"name": name, "partitions": "1"}, follow_redirects=False
    )
    assert forged.status_code == 403 and name not in console.broker.admin().list_topics()
    wrong = console.post(
        "/console/topics", data={"name": name, "csrf_token": "x" * 43}, follow_redirects=False
    )
    assert wrong.status_code == 403
    made = console.post(
        "/console/topics",
        data={"name": name, "partitions": "1", "csrf_token": token},
        follow_redirects=False,
    )
    assert made.status_code == 303 and name in console.broker.admin().list_topics()
    produced = console.post(
        f"/console/topics/{name}/produce",
        data={"key": "k", "value": "hello", "headers": "type=order", "csrf_token": token},
        follow_redirects=False,
    )
    assert produced.status_code == 303 and produced.headers["location"].endswith("produced=0%3A0")
    page = console.get(f"/console/topics/{name}").text
    assert "hello" in page and "type=order" in page


def test_a_script_in_a_record_renders_as_text(console):
    name = new_topic_name()
    console.broker.admin().create_topic(name, 1)
    producer = console.broker.producer()
    producer.send(name, value=XSS.encode(), key=XSS.encode(), headers=[(XSS, XSS.encode())])
    producer.flush()
    page = console.get(f"/console/topics/{name}").text
    assert "<script>document.title" not in page and "<img src=x" not in page
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in page


def test_a_script_in_a_topic_name_or_group_path_is_refused_or_escaped(console):
    token = csrf_of(console.get("/console").text)
    refused = console.post("/console/topics", data={"name": XSS, "csrf_token": token})
    assert refused.status_code == 400 and "<script>" not in refused.text
    assert "InvalidTopicName" in refused.text
    missing = console.get("/console/groups/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert missing.status_code == 404 and "<script>alert(1)" not in missing.text


def test_bad_browse_input_is_shown_beside_the_form(console):
    name = new_topic_name()
    console.broker.admin().create_topic(name, 1)
    page = console.get(f"/console/topics/{name}", params={"filter": "value LIKE"})
    assert page.status_code == 200 and "InvalidFilter" in page.text
    page = console.get(f"/console/topics/{name}", params={"offset": "abc", "partition": "0"})
    assert page.status_code == 200 and "InvalidRequest: offset is a number" in page.text
    unknown = console.get("/console/topics/no-such-topic")
    assert unknown.status_code == 404
    assert "TopicNotFound" in unknown.text or "UnknownTopicOrPartition" in unknown.text


@pytest.mark.slow  # the browser test watches the same fragment in Chromium
def test_group_page_shows_lag_falling_as_a_consumer_runs(console):
    name = new_topic_name()
    console.broker.admin().create_topic(name, 1)
    producer = console.broker.producer()
    for i in range(50):
        producer.send(name, value=str(i).encode())
    producer.flush()
    consumer = console.broker.consumer(
        name, group_id=f"g-{name}", auto_offset_reset="earliest", max_poll_records=10
    )
    consumer.poll(2000)
    consumer.commit()

    def lag() -> int:
        text = console.get(f"/console/fragments/groups/g-{name}").text
        return int(re.search(r'id="group-lag">(\d+)<', text).group(1))

    first = lag()
    assert 0 < first < 50
    eventually(
        lambda: (
            [r for b in consumer.poll(500).values() for r in b]
            and consumer.commit() is None
            and lag() == 0
        ),
        timeout_s=30,
    )
    page = console.get(f"/console/groups/g-{name}").text
    assert "Stable" in page and "<svg" in page
    consumer.close()


@pytest.mark.slow  # the browser test re-drives from this page; CSRF is tested on every form
def test_dead_letters_page_redrives_with_the_csrf_token(console):
    import ray_broker as rb

    name = new_topic_name()
    console.broker.admin().create_topic(name, 1)
    producer = console.broker.producer()
    producer.send(name, value=b"poison")
    producer.flush()
    member = console.broker.share_consumer(
        name, group_id="mail", auto_offset_reset="earliest", share_acknowledgement_mode="explicit"
    )
    [record] = eventually(lambda: [r for b in member.poll(500).values() for r in b])
    member.acknowledge(record, rb.AcknowledgeType.REJECT, error="bad address")
    member.commit_sync()
    dlq = f"{name}.mail.dlq"
    page = eventually(
        lambda: (
            (p := console.get(f"/console/dead-letters/{dlq}")).status_code == 200
            and "poison" in p.text
            and p
        )
    )
    assert "bad address" in page.text
    share = console.get("/console/share-groups/mail").text
    assert dlq in share
    forged = console.post(f"/console/dead-letters/{dlq}/redrive", data={}, follow_redirects=False)
    assert forged.status_code == 403
    done = console.post(
        f"/console/dead-letters/{dlq}/redrive",
        data={"csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"].endswith("redriven=1")
    member.close()


def test_nodes_page_shows_this_node_and_its_leaders(console):
    console.broker.admin().create_topic(new_topic_name(), 1)
    page = eventually(
        lambda: (
            (p := console.get("/console/nodes")).status_code == 200 and "127.0.0.1" in p.text and p
        )
    )
    assert "Partition leaders" in page.text
