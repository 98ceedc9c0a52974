"""A secured broker on a real local Ray: SCRAM logins, sessions checked by every actor (also
when a caller bypasses the client), the ACL matrix, tenants, revocation, quotas."""

from __future__ import annotations

import base64
import collections
import json
import threading
import time
import uuid
from types import SimpleNamespace

import pyarrow as pa
import pytest
import ray

import ray_broker as rb
from ray_broker.actors.security.session_tokens import TokenSigner
from ray_broker.config import CONTROLLER_NAME, GROUP_COORDINATOR_NAME
from ray_broker.errors import (
    AuthenticationFailed,
    InvalidAcl,
    QuotaExceeded,
    TopicNotFound,
    Unauthorized,
)
from tests.conftest import start_local_ray

ROOT = ("root", "root-password")


@pytest.fixture(scope="module")
def secured(_session_ray, tmp_path_factory):
    start_local_ray()
    namespace = f"secure-{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path_factory.mktemp("secured")
    root = rb.connect(
        namespace=namespace,
        data_dir=data_dir,
        config={
            "security.enabled": True,
            "quota.window.size.ms": 100,  # quotas converge in ~1 s instead of ~11 s
            "log.retention.check.interval.ms": 500,  # housekeeping runs while tests wait
        },
        username=ROOT[0],
        password=ROOT[1],
    )
    admin = root.admin()
    for user in ("alice", "bob", "carol", "acme/ann", "globex/gus"):
        admin.create_user(user, f"{user}-pw")
    yield SimpleNamespace(root=root, admin=admin, namespace=namespace, data_dir=data_dir)
    root.shutdown()


def connect_as(secured, user: str, password: str | None = None, **options) -> rb.Broker:
    return rb.connect(
        namespace=secured.namespace,
        username=user,
        password=password or f"{user}-pw",
        **options,
    )


def _topic(secured, name: str | None = None, partitions: int = 1) -> str:
    name = name or f"t-{uuid.uuid4().hex[:6]}"
    secured.admin.create_topic(name, partitions=partitions)
    return name


def _produce(broker, topic: str, count: int = 3) -> None:
    producer = broker.producer(linger_ms=0)
    try:
        for i in range(count):
            producer.send(topic, value=f"v{i}".encode(), key=b"k").result(timeout=30)
    finally:
        producer.close()


def _consume(broker, topic: str, count: int, wait_s: float = 30, **options) -> list[bytes]:
    consumer = broker.consumer(topic, auto_offset_reset="earliest", **options)
    got: list[bytes] = []
    deadline = time.monotonic() + wait_s
    try:
        while len(got) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(r.value for r in records)
    finally:
        consumer.close()
    return got


# --- authentication -------------------------------------------------------------------------


def test_a_secured_broker_refuses_connections_without_good_credentials(secured):
    with pytest.raises(AuthenticationFailed, match="secured"):
        rb.connect(namespace=secured.namespace)
    with pytest.raises(AuthenticationFailed, match="wrong user name or password") as wrong:
        connect_as(secured, "alice", "not-her-password")
    with pytest.raises(AuthenticationFailed) as unknown:
        connect_as(secured, "nobody", "whatever")
    assert str(wrong.value) == str(unknown.value), "an unknown user must look like a bad password"
    with connect_as(secured, "alice", mechanism="SCRAM-SHA-512") as alice:
        assert alice.whoami() == "User:alice"


def test_guessing_a_password_is_slowed_down_and_others_keep_service(secured):
    for _ in range(5):
        with pytest.raises(AuthenticationFailed, match="wrong"):
            connect_as(secured, "carol", "guess")
    with pytest.raises(AuthenticationFailed, match="too many failed logins") as locked:
        connect_as(secured, "carol")  # even the right password waits now
    assert locked.value.retry_after_ms > 0
    with connect_as(secured, "bob") as bob:
        assert bob.whoami() == "User:bob"
    time.sleep(locked.value.retry_after_ms / 1000)
    with connect_as(secured, "carol") as carol:
        assert carol.whoami() == "User:carol"


def _keys(secured) -> dict:
    path = secured.data_dir / "__internal" / "session.keys"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    return json.loads(path.read_text())


def test_every_actor_refuses_a_caller_that_bypasses_the_client(secured):
    """A caller with raw actor handles but no valid session: no token, a forged one (signed
    with another key), an expired one (signed with the broker's own key), one whose payload was
    altered."""
    topic = _topic(secured)
    keys = _keys(secured)
    real_key = bytes.fromhex(keys["keys"][keys["current"]])
    expired = TokenSigner(
        {keys["current"]: real_key}, keys["current"], lambda: int(time.time() * 1000) - 10**7
    ).issue("root", None, 1, 60_000)
    forged = TokenSigner({keys["current"]: b"x" * 32}, keys["current"]).issue(
        "root", None, 1, 10**6
    )
    good = secured.root.session_token()
    head, body, mac = good.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload["u"] = "root2"
    altered_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    altered = f"{head}.{altered_body}.{mac}"

    controller = ray.get_actor(CONTROLLER_NAME, namespace=secured.namespace)
    coordinator = ray.get_actor(GROUP_COORDINATOR_NAME, namespace=secured.namespace)
    leader = ray.get(controller.metadata.remote(topic, session=good)).leaders[0]
    batch = pa.table({"value": pa.array([b"sneaky"], pa.binary())})
    calls = {
        "produce": lambda **s: leader.produce.remote(batch, None, 0, 0, 1, **s),
        "fetch": lambda **s: leader.fetch.remote(0, 10, 1 << 20, **s),
        "describe": lambda **s: controller.describe_topic.remote(topic, **s),
        "delete_topic": lambda **s: controller.delete_topic.remote(topic, **s),
        "create_acls": lambda **s: controller.create_acls.remote(
            [rb.Acl("User:carol", "topic", "*", "all")], **s
        ),
        "commit": lambda **s: coordinator.commit.remote("g", None, {(topic, 0): (0, "")}, **s),
        "list_groups": lambda **s: coordinator.list_groups.remote(**s),
    }
    for name, send in calls.items():
        for session in ({}, {"session": forged}, {"session": expired}, {"session": altered}):
            with pytest.raises(AuthenticationFailed):
                ray.get(send(**session), timeout=30)
        assert name  # every call refused for every bad session
    # The broker still serves the real session, and nothing sneaked in.
    assert _consume(secured.root, topic, 1, wait_s=2) == []
    assert secured.admin.describe_topic(topic).name == topic


def test_a_deleted_user_or_a_new_password_ends_sessions_at_once(secured):
    secured.admin.create_user("dave", "dave-pw")
    topic = _topic(secured)
    secured.admin.create_acls([rb.Acl("User:dave", "topic", topic, "write")])
    dave = connect_as(secured, "dave")
    _produce(dave, topic, 1)
    secured.admin.create_user("dave", "new-pw")  # a new password: the old session ends
    with pytest.raises(AuthenticationFailed, match="password changed"):
        _produce(dave, topic, 1)
    dave.close()
    dave = connect_as(secured, "dave", "new-pw")
    _produce(dave, topic, 1)
    secured.admin.delete_user("dave")
    with pytest.raises(AuthenticationFailed):
        _produce(dave, topic, 1)
    dave.close()
    assert "dave" not in [u.name for u in secured.admin.list_users()]


# --- authorization --------------------------------------------------------------------------


def test_the_acl_matrix_on_real_actors(secured):
    pay, logs = _topic(secured, f"pay-{uuid.uuid4().hex[:4]}"), _topic(secured, "logs.app")
    _produce(secured.root, logs, 2)
    secured.admin.create_acls(
        [
            rb.Acl("User:alice", "topic", pay, "write"),
            rb.Acl("User:bob", "topic", pay, "read"),
            rb.Acl("User:bob", "group", "bob-", "read", pattern="prefixed"),
            rb.Acl("User:bob", "topic", "logs.", "read", pattern="prefixed"),
        ]
    )
    alice, bob, carol = (connect_as(secured, u) for u in ("alice", "bob", "carol"))
    try:
        _produce(alice, pay, 3)  # alice: write
        with pytest.raises(Unauthorized) as refused:
            _consume(alice, pay, 1)
        assert (refused.value.principal, refused.value.operation) == ("User:alice", "read")
        assert refused.value.resource == f"topic:{pay}"
        with pytest.raises(Unauthorized):
            _produce(bob, pay, 1)  # bob: read only
        assert len(_consume(bob, pay, 3, group_id="bob-readers")) == 3
        with pytest.raises(Unauthorized):
            _consume(bob, pay, 1, group_id="not-bobs")  # the group is not his
        assert len(_consume(bob, logs, 2)) == 2  # prefixed grant
        # carol has nothing: an existing and a missing topic look the same to her.
        for name in (pay, "no-such-topic"):
            with pytest.raises(Unauthorized):
                carol.admin().describe_topic(name)
        assert carol.admin().list_topics() == []
        assert set(bob.admin().list_topics()) == {pay, logs}
        with pytest.raises(Unauthorized):
            carol.admin().create_topic("carols")
        with pytest.raises(Unauthorized):
            carol.admin().create_acls([rb.Acl("User:carol", "topic", "*", "all")])
        # Deny wins, and takes effect as soon as the admin call returns.
        secured.admin.create_acls([rb.Acl("User:bob", "topic", pay, "read", permission="deny")])
        with pytest.raises(Unauthorized):
            _consume(bob, pay, 1, group_id="bob-readers-2")
        secured.admin.delete_acls("User:bob", "topic", pay)
        assert secured.admin.describe_acls("User:bob", "topic", pay) == []
    finally:
        for broker in (alice, bob, carol):
            broker.close()


def test_malformed_acls_are_refused_and_nothing_is_created(secured):
    before = secured.admin.describe_acls()
    with pytest.raises(InvalidAcl):
        secured.admin.create_acls(
            [rb.Acl("User:x", "topic", "t", "read"), rb.Acl("x", "topic", "t", "read")]
        )
    assert secured.admin.describe_acls() == before


# --- tenants --------------------------------------------------------------------------------


def test_tenants_see_and_touch_only_their_own_namespace(secured):
    secured.admin.create_acls(
        [
            rb.Acl("User:acme/ann", "topic", "acme.", "all", pattern="prefixed"),
            rb.Acl("User:acme/ann", "group", "acme.", "all", pattern="prefixed"),
            rb.Acl("User:globex/gus", "topic", "globex.", "all", pattern="prefixed"),
            # A careless wildcard grant must not open one tenant to another:
            rb.Acl("User:*", "topic", "*", "describe"),
        ]
    )
    ann, gus = connect_as(secured, "acme/ann"), connect_as(secured, "globex/gus")
    try:
        ann.admin().create_topic("acme.orders")
        gus.admin().create_topic("globex.orders")
        _produce(ann, "acme.orders", 2)
        assert len(_consume(ann, "acme.orders", 2, group_id="acme.billing")) == 2
        assert ann.admin().list_topics() == ["acme.orders"]
        for attempt in (
            lambda: gus.admin().describe_topic("acme.orders"),
            lambda: _produce(gus, "acme.orders", 1),
            lambda: _consume(gus, "acme.orders", 1),
            lambda: ann.admin().create_topic("orders"),
            lambda: ann.admin().list_users(),
        ):
            with pytest.raises(Unauthorized):
                attempt()
        with pytest.raises(InvalidAcl, match="tenant"):
            secured.admin.create_acls([rb.Acl("User:acme/ann", "topic", "globex.orders", "read")])
        with pytest.raises(InvalidAcl):
            secured.admin.create_user("acme/boss", "pw", superuser=True)
    finally:
        ann.close()
        gus.close()


# --- quotas ---------------------------------------------------------------------------------


def _produce_for(broker, topic: str, seconds: float, out: dict, key: str) -> None:
    """Send 5 kB records as fast as the producer lets (its buffer.memory blocks it once the
    broker holds answers back); record (elapsed s, bytes acknowledged) as it goes."""
    producer = broker.producer(linger_ms=0, acks=1, client_id=key, buffer_memory=50_000)
    value = b"x" * 5_000
    pending: collections.deque = collections.deque()
    acked = 0
    marks = [(0.0, 0)]
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        pending.append(producer.send(topic, value=value))
        while pending and pending[0].done():
            pending.popleft().result()
            acked += len(value)
        marks.append((time.monotonic() - start, acked))
    producer.flush()
    producer.close()
    out[key] = marks


def test_a_throttled_user_converges_to_its_quota_while_others_keep_full_speed(secured):
    secured.admin.create_user("slow", "slow-pw")
    secured.admin.create_user("fast", "fast-pw")
    slow_topic, fast_topic = _topic(secured), _topic(secured)
    secured.admin.create_acls(
        [
            rb.Acl("User:slow", "topic", slow_topic, "write"),
            rb.Acl("User:fast", "topic", fast_topic, "write"),
        ]
    )
    quota = 200_000.0
    now = secured.admin.alter_quotas(rb.QuotaEntity(user="slow"), {"producer_byte_rate": quota})
    assert now == {"producer_byte_rate": quota}
    assert secured.admin.describe_quotas()["user=slow"] == {"producer_byte_rate": quota}
    slow, fast = connect_as(secured, "slow"), connect_as(secured, "fast")
    marks: dict = {}
    try:
        threads = [
            threading.Thread(target=_produce_for, args=(b, t, 6.0, marks, k))
            for b, t, k in ((slow, slow_topic, "slow"), (fast, fast_topic, "fast"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        slow.close()
        fast.close()

    def rate(series, start_s, end_s):
        at = lambda t: max(b for s, b in series if s <= t)  # noqa: E731
        return (at(end_s) - at(start_s)) / (end_s - start_s)

    slow_rate = rate(marks["slow"], 2.0, 6.0)  # past the burst one quota window allows
    fast_rate = rate(marks["fast"], 2.0, 6.0)
    assert quota * 0.8 <= slow_rate <= quota * 1.2, slow_rate
    assert fast_rate > 3 * quota, fast_rate
    # And the broker said why: the answer carries Kafka's throttle_time_ms.
    leader = secured.root._metadata.topic(slow_topic).leader(0)
    token = connect_as(secured, "slow").session_token()
    batch = pa.table({"value": pa.array([b"x" * 500_000], pa.binary())})
    result = ray.get(leader.unwrapped.produce.remote(batch, None, 0, 0, 1, session=token))
    assert result.throttle_time_ms > 0
    secured.admin.alter_quotas(rb.QuotaEntity(user="slow"), {"producer_byte_rate": None})
    assert "user=slow" not in secured.admin.describe_quotas()


@pytest.mark.parametrize(
    "values",
    [{"producer_byte_rate": -5}, {"producer_byte_rate": 1e300}, {"bandwidth": 1}, {}],
)
def test_absurd_quota_values_are_typed_errors(secured, values):
    with pytest.raises(InvalidAcl):
        secured.admin.alter_quotas(rb.QuotaEntity(user="alice"), values)


def test_a_token_lets_a_worker_act_as_the_user_without_the_password(secured):
    topic = _topic(secured)
    secured.admin.create_acls([rb.Acl("User:alice", "topic", topic, "all")])
    with connect_as(secured, "alice") as alice:
        token = alice.session_token()
        with rb.connect(namespace=secured.namespace, token=token) as worker:
            assert worker.whoami() == "User:alice"
            _produce(worker, topic, 1)
            with pytest.raises(Unauthorized):
                worker.admin().delete_topic("logs.app")
    with pytest.raises(TopicNotFound):
        secured.admin.describe_topic("never-created")


def test_users_and_acls_from_the_command_line(secured):
    from typer.testing import CliRunner

    from ray_broker.cli import app

    runner = CliRunner()
    as_root = ["--namespace", secured.namespace, "--user", "root", "-o", "json"]
    env = {"RAY_BROKER_PASSWORD": ROOT[1], "RAY_BROKER_NEW_PASSWORD": "erin-pw"}
    added = runner.invoke(app, [*as_root, "user", "add", "erin"], env=env)
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, [*as_root, "user", "list"], env=env)
    assert "erin" in [u["name"] for u in json.loads(listed.output)]
    assert "erin-pw" not in listed.output
    granted = runner.invoke(
        app,
        [*as_root, "acl", "add", "--principal", "User:erin", "--resource-type", "topic",
         "--name", "erin.", "--prefixed", "--operation", "read", "--operation", "write"],
        env=env,
    )  # fmt: skip
    assert granted.exit_code == 0, granted.output
    acls = runner.invoke(app, [*as_root, "acl", "list", "--principal", "User:erin"], env=env)
    assert sorted(a["operation"] for a in json.loads(acls.output)) == ["read", "write"]
    refused = runner.invoke(
        app,
        ["--namespace", secured.namespace, "--user", "erin", "user", "list"],
        env={"RAY_BROKER_PASSWORD": "erin-pw"},
    )
    assert refused.exit_code == 1 and "Unauthorized" in refused.output
    bad = runner.invoke(app, [*as_root, "user", "list"], env={"RAY_BROKER_PASSWORD": "nope"})
    assert bad.exit_code == 1 and "AuthenticationFailed" in bad.output
    removed = runner.invoke(app, [*as_root, "acl", "remove", "--principal", "User:erin"], env=env)
    assert len(json.loads(removed.output)) == 2
    deleted = runner.invoke(app, [*as_root, "user", "delete", "erin"], env=env)
    assert deleted.exit_code == 0, deleted.output


def test_a_producer_held_back_blocks_up_to_max_block_ms_then_gets_a_typed_error(secured):
    """Back-pressure end to end: a broker holding answers back (here, a quota) fills the
    producer's buffer.memory; send() blocks for max.block.ms, then raises BrokerTimeoutError.
    Every acknowledged record is in the log, once; nothing is dropped."""
    from ray_broker.errors import BrokerTimeoutError

    secured.admin.create_user("flood", "flood-pw")
    topic = _topic(secured)
    secured.admin.create_acls([rb.Acl("User:flood", "topic", topic, "write")])
    secured.admin.alter_quotas(rb.QuotaEntity(user="flood"), {"producer_byte_rate": 20_000})
    futures = []
    with connect_as(secured, "flood") as flood:
        producer = flood.producer(linger_ms=0, buffer_memory=20_000, max_block_ms=1_000)
        started = time.monotonic()
        with pytest.raises(BrokerTimeoutError, match="max.block.ms"):
            for i in range(1_000):
                futures.append(producer.send(topic, value=b"%06d" % i + b"x" * 4_994))
        assert time.monotonic() - started >= 1.0
        producer.close()  # flushes what was accepted: held back, not dropped
    sent = [b"%06d" % i for i in range(len(futures))]
    for future in futures:
        future.result(timeout=60)
    got = [v[:6] for v in _consume(secured.root, topic, len(futures), wait_s=30)]
    assert got == sent  # all of them, once, in order
    secured.admin.alter_quotas(rb.QuotaEntity(user="flood"), {"producer_byte_rate": None})


def test_topic_creation_over_the_mutation_quota_is_refused_then_admitted(secured):
    secured.admin.create_user("maker", "maker-pw")
    secured.admin.create_acls([rb.Acl("User:maker", "topic", "maker.", "all", pattern="prefixed")])
    secured.admin.alter_quotas(rb.QuotaEntity(user="maker"), {"controller_mutation_rate": 1})
    with connect_as(secured, "maker") as maker:
        admin = maker.admin()
        outcomes: dict = {}

        def create(name: str) -> None:
            try:
                admin.create_topic(name, partitions=3)
                outcomes[name] = "created"
            except QuotaExceeded as exc:
                outcomes[name] = exc

        # Two at once (this fixture's quota windows are short): the first is admitted whole,
        # the second finds the rate above the quota.
        threads = [threading.Thread(target=create, args=(n,)) for n in ("maker.a", "maker.b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        refused = [(n, o) for n, o in outcomes.items() if isinstance(o, QuotaExceeded)]
        assert len(refused) == 1 and len(outcomes) == 2, outcomes
        name, error = refused[0]
        assert error.retriable and error.throttle_ms > 0
        assert name not in admin.list_topics()
        time.sleep(error.throttle_ms / 1000)
        admin.create_topic(name, partitions=3)
        mine = [t for t in admin.list_topics() if t.startswith("maker.")]
        assert mine == ["maker.a", "maker.b"]


def test_background_housekeeping_runs_on_a_secured_broker(secured):
    """The periodic housekeeping once went through the guarded ``maintain`` call without the
    broker's token: on a secured broker every round was refused, and retention never ran."""
    name = f"t-{uuid.uuid4().hex[:6]}"
    secured.admin.create_topic(name, partitions=1, config={"segment.ms": 50, "retention.ms": 200})
    _produce(secured.root, name, count=3)
    time.sleep(0.3)
    _produce(secured.root, name, count=1)  # rolls the aged segment: retention may delete it
    deadline = time.monotonic() + 30
    start = 0
    while time.monotonic() < deadline and start < 3:
        start = secured.admin.describe_topic(name).partitions[0].log_start_offset
        time.sleep(0.25)
    assert start >= 3, "retention never ran: the log still starts at offset 0"


def test_a_restarted_partition_actor_pulls_the_rules_before_serving(secured):
    """A partition actor that crashes restarts without the pushed policy; it must fetch the
    Controller's before it serves anyone (never serve as if security were off), and clients
    retry through the crash with default settings."""
    secured.admin.create_user("erin", "erin-pw")
    topic = _topic(secured)
    secured.admin.create_acls([rb.Acl("User:erin", "topic", topic, "write")])
    erin, carol = connect_as(secured, "erin"), connect_as(secured, "carol")
    try:
        _produce(erin, topic, 2)
        leader = secured.root._metadata.topic(topic).leader(0)
        ray.kill(leader.unwrapped, no_restart=False)
        _produce(erin, topic, 2)  # retried through the restart, then checked and accepted
        with pytest.raises(Unauthorized):
            _produce(carol, topic, 1)
        raw = ray.get_actor(CONTROLLER_NAME, namespace=secured.namespace)
        fresh = ray.get(raw.metadata.remote(topic, session=secured.root.session_token())).leaders[0]
        with pytest.raises(AuthenticationFailed):
            ray.get(fresh.offsets.remote(), timeout=30)  # no session: refused after restart
    finally:
        erin.close()
        carol.close()
    assert len(_consume(secured.root, topic, 4)) == 4


def _data_plane_said(endpoint, data: bytes) -> bytes:
    """What a leader's data-plane listener wrote back before closing the connection."""
    import socket

    with socket.create_connection(endpoint, timeout=10) as sock:
        sock.sendall(data)
        said = b""
        while chunk := sock.recv(65536):
            said += chunk
    return said


def test_the_data_plane_refuses_a_session_it_cannot_authenticate(secured):
    from ray_broker import frames
    from ray_broker.storage.ipc import to_ipc

    name = _topic(secured)
    leader = secured.root._metadata.topic(name).leader(0)
    endpoint = tuple(ray.get(leader.data_endpoint.remote()))
    forged = frames.Envelope(0, frames.NO_EPOCH, frames.Hello(session="forged-token"))
    fetch = frames.Envelope(1, frames.NO_EPOCH, frames.Fetch(0, 10, 1_000, 0, False))
    parts = frames.frame(forged) + frames.frame(fetch)
    said = _data_plane_said(endpoint, b"".join(bytes(p) for p in parts))
    header, _ = frames.split(said[frames.LENGTH.size :])
    answer = frames.decode_answer(header)
    assert answer.correlation == 0 and answer.result.error == "AuthenticationFailed"
    assert len(said) == frames.LENGTH.size + frames.LENGTH.unpack_from(said)[0], (
        "the fetch after a refused Hello was answered"
    )
    # A renewed session that is refused ends the connection: nothing after it is served.
    good = frames.Envelope(0, frames.NO_EPOCH, frames.Hello(session=secured.root.session_token()))
    bad = frames.Envelope(1, frames.NO_EPOCH, frames.Hello(session="forged-token"))
    record = pa.table({"value": pa.array([b"after a refused session"], pa.binary())})
    produce = frames.Envelope(2, frames.NO_EPOCH, frames.Produce(None, 0, 0, 1, False, False))
    parts = frames.frame(good) + frames.frame(bad) + frames.frame(produce, to_ipc(record))
    end_before = secured.admin.describe_topic(name).partitions[0].log_end_offset
    said = _data_plane_said(endpoint, b"".join(bytes(p) for p in parts))
    time.sleep(0.5)
    assert secured.admin.describe_topic(name).partitions[0].log_end_offset == end_before
    answers = []
    while said:
        size = frames.LENGTH.unpack_from(said)[0]
        header, _ = frames.split(said[frames.LENGTH.size : frames.LENGTH.size + size])
        answers.append(frames.decode_answer(header))
        said = said[frames.LENGTH.size + size :]
    assert [type(a.result).__name__ for a in answers] == ["Welcome", "Failed"]
    assert answers[1].result.error == "AuthenticationFailed"
    # A stranger's large frame is refused from its length alone, before it is read.
    huge = _data_plane_said(endpoint, frames.LENGTH.pack(frames.PRE_AUTH_FRAME_MAX + 1))
    assert b"InvalidRequest" in huge
    # The data plane serves an authenticated user as before, and still checks the ACLs.
    producer = secured.root.producer(linger_ms=0)
    for i in range(20):
        producer.send(name, value=f"v{i}".encode(), key=b"k").result(timeout=30)
    direct = producer._sender._transport.counts["direct"]
    producer.close()
    assert direct > 0, "a secured client never used the data plane"
    assert sorted(_consume(secured.root, name, 20))[:3] == [b"v0", b"v1", b"v10"]
    with pytest.raises(Unauthorized):
        _produce(connect_as(secured, "carol"), name, count=1)
