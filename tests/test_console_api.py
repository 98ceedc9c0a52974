"""The HTTP API through FastAPI's TestClient against a real broker (security off): topics,
records, groups, share groups and dead letters, and every kind of bad input answered with a
4xx naming the typed error — never a 500, never a traceback."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest

from tests.console_helpers import close_client, console_broker, eventually, new_topic_name
from tests.console_helpers import test_client as make_client


@pytest.fixture(scope="module")
def api(_session_ray, tmp_path_factory):
    broker = console_broker(tmp_path_factory.mktemp("console"), "console")
    client = make_client(broker)
    client.broker = broker
    yield client
    close_client(client)
    broker.shutdown()


def create(api, partitions: int = 1, **configs) -> str:
    name = new_topic_name()
    body = {
        "topic_name": name,
        "partitions_count": partitions,
        "configs": [{"name": k, "value": v} for k, v in configs.items()],
    }
    answer = api.post(f"{api.cluster}/topics", json=body)
    assert answer.status_code == 201, answer.text
    return name


def test_clusters_and_an_unknown_cluster_id(api):
    listed = api.get("/v3/clusters").json()["data"]
    assert [c["cluster_id"] for c in listed] == [api.console_state.cluster_id]
    assert listed[0]["principal"] == "User:ANONYMOUS"
    missing = api.get("/v3/clusters/nope/topics")
    assert missing.status_code == 404 and missing.json()["error"] == "InvalidRequest"


def test_topic_lifecycle_create_describe_configs_alter_delete(api):
    name = create(api, partitions=3, **{"retention.ms": 3_600_000})
    topic = api.get(f"{api.cluster}/topics/{name}").json()
    assert topic["partitions_count"] == 3
    assert [p["partition_id"] for p in topic["partitions"]] == [0, 1, 2]
    assert all(p["leader"] and p["high_watermark"] == 0 for p in topic["partitions"])
    configs = {
        c["name"]: c["value"]
        for c in api.get(f"{api.cluster}/topics/{name}/configs").json()["data"]
    }
    assert configs["retention.ms"] == 3_600_000
    altered = api.post(
        f"{api.cluster}/topics/{name}/configs:alter",
        json={"data": [{"name": "retention.ms", "value": 60_000}]},
    )
    assert altered.status_code == 204
    configs = {
        c["name"]: c["value"]
        for c in api.get(f"{api.cluster}/topics/{name}/configs").json()["data"]
    }
    assert configs["retention.ms"] == 60_000
    partition = api.get(f"{api.cluster}/topics/{name}/partitions/2").json()
    assert partition["partition_id"] == 2 and not partition["offline"]
    assert api.get(f"{api.cluster}/topics/{name}/partitions/9").status_code == 404
    names = [t["topic_name"] for t in api.get(f"{api.cluster}/topics?limit=1000").json()["data"]]
    assert name in names
    duplicate = api.post(f"{api.cluster}/topics", json={"topic_name": name})
    assert duplicate.status_code == 409 and duplicate.json()["error"] == "TopicExists"
    assert api.delete(f"{api.cluster}/topics/{name}").status_code == 204
    gone = api.get(f"{api.cluster}/topics/{name}")
    assert gone.status_code == 404 and gone.json()["error"] in (
        "TopicNotFound",
        "UnknownTopicOrPartition",
    )


def test_topic_listing_pages_through_every_topic_once(api):
    made = sorted(create(api) for _ in range(3))
    seen, cursor = [], None
    while True:
        query = "limit=2" + (f"&start_after={cursor}" if cursor else "")
        answer = api.get(f"{api.cluster}/topics?{query}").json()
        seen += [t["topic_name"] for t in answer["data"]]
        cursor = answer["next_start_after"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(set(seen)) and set(made) <= set(seen)


def test_produced_records_read_back_the_same_as_json_string_and_binary(api):
    name = create(api)
    raw = bytes(range(256))
    bodies = [
        {"key": {"type": "STRING", "data": "k1"}, "value": {"type": "JSON", "data": {"n": 1}}},
        {
            "key": {"type": "BINARY", "data": base64.b64encode(b"\xff\x00").decode()},
            "value": {"type": "BINARY", "data": base64.b64encode(raw).decode()},
            "headers": [{"name": "type", "value": base64.b64encode(b"order").decode()}],
        },
        {"value": {"type": "STRING", "data": "plain text"}},
    ]
    offsets = []
    for body in bodies:
        answer = api.post(f"{api.cluster}/topics/{name}/records", json=body)
        assert answer.status_code == 200, answer.text
        offsets.append(answer.json()["offset"])
    assert offsets == [0, 1, 2]
    records = api.get(f"{api.cluster}/topics/{name}/partitions/0/records?offset=0").json()["data"]
    assert [r["offset"] for r in records] == [0, 1, 2]
    assert records[0]["key"] == {"type": "STRING", "data": "k1"}
    assert json.loads(records[0]["value"]["data"]) == {"n": 1}
    assert base64.b64decode(records[1]["value"]["data"]) == raw
    assert base64.b64decode(records[1]["key"]["data"]) == b"\xff\x00"
    assert records[1]["headers"] == [{"name": "type", "value": base64.b64encode(b"order").decode()}]
    assert records[2]["value"] == {"type": "STRING", "data": "plain text"}
    # The same records natively.
    native = api.broker.consumer(auto_offset_reset="earliest")
    native.assign([__import__("ray_broker").TopicPartition(name, 0)])
    got = eventually(lambda: [r for batch in native.poll(500).values() for r in batch])
    native.close()
    assert got[1].value == raw and got[2].value == b"plain text"


def test_a_batch_of_records_lands_in_order_with_one_answer_per_entry(api):
    name = create(api, partitions=4)
    entries = [
        {"id": str(i), "key": {"type": "STRING", "data": f"user-{i % 10}"}, "value": {"data": i}}
        for i in range(2_000)
    ]
    answer = api.post(f"{api.cluster}/topics/{name}/records:batch", json={"entries": entries})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["failures"] == [] and len(body["successes"]) == 2_000
    by_partition: dict[int, list[int]] = {}
    for success in body["successes"]:
        by_partition.setdefault(success["partition_id"], []).append(success["offset"])
    for offsets in by_partition.values():
        assert offsets == list(range(len(offsets)))  # dense, in entry order per partition
    same_key = {s["partition_id"] for s in body["successes"] if int(s["id"]) % 10 == 3}
    assert len(same_key) == 1
    page = api.get(f"{api.cluster}/topics/{name}/records?limit=1000").json()["data"]
    assert len(page) == 1_000


def test_browsing_by_time_and_through_the_broker_side_filter(api):
    name = create(api)
    url = f"{api.cluster}/topics/{name}/records"
    for kind in ("order", "refund", "order"):
        header = [{"name": "type", "value": base64.b64encode(kind.encode()).decode()}]
        api.post(url, json={"value": {"data": kind}, "headers": header})
    middle = int(time.time() * 1000)
    time.sleep(0.05)
    api.post(url, json={"value": {"data": "late"}})
    orders = api.get(f"{url}?filter=headers.type = 'order'").json()["data"]
    assert [r["offset"] for r in orders] == [0, 2]
    late = api.get(f"{url}?timestamp={middle}").json()["data"]
    assert [r["value"]["data"] for r in late] == ['"late"']
    bad = api.get(f"{url}?filter=headers.type ==== 1")
    assert bad.status_code == 400 and bad.json()["error"] == "InvalidFilter"


def test_a_consumer_group_shows_members_lag_and_can_be_reset_once_empty(api):
    import ray_broker as rb

    name = create(api, partitions=2)
    entries = [{"id": str(i), "value": {"data": i}} for i in range(100)]
    api.post(f"{api.cluster}/topics/{name}/records:batch", json={"entries": entries})
    group = f"g-{name}"
    consumer = api.broker.consumer(name, group_id=group, auto_offset_reset="earliest")
    eventually(lambda: consumer.poll(500) or None)
    consumer.commit()
    described = api.get(f"{api.cluster}/consumer-groups/{group}").json()
    assert described["state"] == "Stable" and len(described["consumers"]) == 1
    assignments = described["consumers"][0]["assignments"]
    assert sorted(a["partition_id"] for a in assignments) == [0, 1]
    busy = api.post(
        f"{api.cluster}/consumer-groups/{group}/offsets:reset",
        json={"topic_name": name, "to": "earliest"},
    )
    assert busy.status_code == 409 and busy.json()["error"] == "GroupNotEmpty"
    consumer.close()
    reset = api.post(
        f"{api.cluster}/consumer-groups/{group}/offsets:reset",
        json={"topic_name": name, "to": "earliest"},
    )
    assert reset.status_code == 200, reset.text
    assert {d["offset"] for d in reset.json()["data"]} == {0}
    summary = api.get(f"{api.cluster}/consumer-groups/{group}/lag-summary").json()
    assert summary["total_lag"] == 100
    lags = api.get(f"{api.cluster}/consumer-groups/{group}/lags").json()["data"]
    assert sum(lag["lag"] for lag in lags) == 100
    assert group in [
        g["consumer_group_id"] for g in api.get(f"{api.cluster}/consumer-groups").json()["data"]
    ]
    assert api.get(f"{api.cluster}/consumer-groups/nope").status_code == 404
    del rb


def test_share_group_in_flight_and_a_dead_letter_redriven(api):
    import ray_broker as rb

    name = create(api, **{"share.delivery.count.limit": 2})
    api.post(
        f"{api.cluster}/topics/{name}/records:batch",
        json={
            "entries": [
                {"id": str(i), "value": {"type": "STRING", "data": str(i)}} for i in range(3)
            ]
        },
    )
    member = api.broker.share_consumer(
        name, group_id="mail", auto_offset_reset="earliest", share_acknowledgement_mode="explicit"
    )
    records = eventually(lambda: [r for batch in member.poll(500).values() for r in batch])
    share = api.get(f"{api.cluster}/share-groups/mail").json()
    assert sum(p["in_flight"] for p in share["partitions"]) == len(records)
    for record in records:
        verdict = rb.AcknowledgeType.REJECT if record.offset == 1 else "accept"
        member.acknowledge(record, verdict, error="bad address")
    member.commit_sync()
    dlq = f"{name}.mail.dlq"
    letters = eventually(
        lambda: api.get(f"{api.cluster}/topics/{dlq}/dead-letters").json().get("data")
    )
    assert [(d["original_offset"], d["reason"], d["value"]["data"]) for d in letters] == [
        (1, "rejected", "1")
    ]
    redriven = api.post(f"{api.cluster}/topics/{dlq}/dead-letters:redrive", json={})
    assert redriven.json() == {"redriven": 1}
    member.close()
    assert "mail" in api.get(f"{api.cluster}/share-groups").json()["data"]


BAD_REQUESTS = [
    (
        "malformed JSON",
        "post",
        "/topics",
        {"content": b'{"topic_name": ', "headers": {"content-type": "application/json"}},
        400,
    ),
    (
        "wrong content type",
        "post",
        "/topics",
        {
            "content": b"topic_name=x",
            "headers": {"content-type": "application/x-www-form-urlencoded"},
        },
        415,
    ),
    ("no content type", "post", "/topics", {"content": b"{}"}, 415),
    ("unknown field", "post", "/topics", {"json": {"topic_name": "x", "evil": 1}}, 422),
    (
        "zero partitions",
        "post",
        "/topics",
        {"json": {"topic_name": "x", "partitions_count": 0}},
        422,
    ),
    (
        "script in a topic name",
        "post",
        "/topics",
        {"json": {"topic_name": "<script>alert(1)</script>"}},
        400,
    ),
    ("unknown topic", "get", "/topics/no-such-topic", {}, 404),
    (
        "produce to an unknown topic",
        "post",
        "/topics/no-such-topic/records",
        {"json": {"value": {"data": 1}}},
        404,
    ),
    (
        "bad base64",
        "post",
        "/topics/{topic}/records",
        {"json": {"value": {"type": "BINARY", "data": "!!"}}},
        422,
    ),
    (
        "string data not a string",
        "post",
        "/topics/{topic}/records",
        {"json": {"value": {"type": "STRING", "data": 5}}},
        422,
    ),
    (
        "unknown data type",
        "post",
        "/topics/{topic}/records",
        {"json": {"value": {"type": "AVRO", "data": 5}}},
        422,
    ),
    ("empty batch", "post", "/topics/{topic}/records:batch", {"json": {"entries": []}}, 422),
    (
        "duplicate batch ids",
        "post",
        "/topics/{topic}/records:batch",
        {"json": {"entries": [{"id": "a"}, {"id": "a"}]}},
        422,
    ),
    ("limit over the page bound", "get", "/topics/{topic}/records?limit=100000", {}, 422),
    ("negative offset", "get", "/topics/{topic}/partitions/0/records?offset=-1", {}, 422),
    ("missing partition", "get", "/topics/{topic}/partitions/7/records", {}, 404),
    ("unknown group", "get", "/consumer-groups/nobody", {}, 404),
    (
        "reset to nowhere",
        "post",
        "/consumer-groups/g/offsets:reset",
        {"json": {"topic_name": "x", "to": "moon"}},
        422,
    ),
    ("JSON array body", "post", "/topics", {"json": [1, 2]}, 422),
]


@pytest.mark.parametrize(
    "what,method,path,kwargs,status", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_input_gets_a_4xx_naming_the_typed_error(api, what, method, path, kwargs, status):
    topic = getattr(api, "_bad_input_topic", None) or create(api)
    api._bad_input_topic = topic
    answer = getattr(api, method)(api.cluster + path.format(topic=topic), **kwargs)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] and body["message"] and "Traceback" not in answer.text
    assert body["error_code"] // 100 == status


def test_an_oversized_body_is_refused_before_it_is_read(api):
    name = create(api)
    huge = b'{"value": {"type": "STRING", "data": "' + b"x" * (17 * 1024 * 1024) + b'"}}'
    answer = api.post(
        f"{api.cluster}/topics/{name}/records",
        content=huge,
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 413 and answer.json()["error"] == "InvalidRequest"

    def chunks():  # no Content-Length: counted while it streams in
        yield b'{"value": {"type": "STRING", "data": "'
        for _ in range(17):
            yield b"x" * (1024 * 1024)
        yield b'"}}'

    streamed = api.post(
        f"{api.cluster}/topics/{name}/records",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert streamed.status_code == 413 and streamed.json()["error"] == "InvalidRequest"
    # The broker keeps serving.
    ok = api.post(f"{api.cluster}/topics/{name}/records", json={"value": {"data": 1}})
    assert ok.status_code == 200 and ok.json()["offset"] == 0


def test_openapi_docs_describe_the_api(api):
    spec = api.get("/openapi.json").json()
    assert "/v3/clusters/{cluster_id}/topics/{topic_name}/records:batch" in spec["paths"]
    refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(spec))
    assert "ProduceBatch" in refs and set(refs) <= set(spec["components"]["schemas"])
    assert api.get("/docs").status_code == 200


def test_cluster_nodes_and_health(api):
    create(api)
    nodes = eventually(lambda: api.get(f"{api.cluster}/brokers").json()["data"])
    assert nodes[0]["node_id"] and nodes[0]["leaders"] >= 0
    health = api.get(f"{api.cluster}/health").json()
    assert health == {"under_replicated_partitions": [], "offline_partitions": []}
