"""The security decisions as plain classes: SCRAM against the RFC's vector, tokens, the ACL
matrix, tenants, quotas with a fake clock, login throttling. No Ray here."""

from __future__ import annotations

import base64
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ray_broker.actors.metadata_store import MetadataStore
from ray_broker.actors.security.access_guard import AccessGuard, SecurityPolicy, SessionHandle
from ray_broker.actors.security.acl import INTERNAL_PRINCIPAL, Authorizer, checked_acl
from ray_broker.actors.security.quotas import QuotaBook, RateMeter, checked_quota_values, entity_key
from ray_broker.actors.security.registry import SecurityRegistry
from ray_broker.actors.security.scram import (
    ScramClient,
    ScramServer,
    credentials_for,
    make_credential,
)
from ray_broker.actors.security.session_tokens import SessionClaims, TokenSigner
from ray_broker.errors import AuthenticationFailed, InvalidAcl, QuotaExceeded, Unauthorized
from ray_broker.structs import Acl, QuotaEntity


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- SCRAM ----------------------------------------------------------------------------------


def test_scram_sha256_matches_the_rfc_7677_example():
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    credential = make_credential("pencil", "SCRAM-SHA-256", 4096, salt)
    client = ScramClient("user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    server = ScramServer("SCRAM-SHA-256", nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    assert client.first() == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = server.first(client.first(), credential, b"")
    assert server_first == (
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    client_final = client.final(server_first)
    assert client_final == (
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    server_final = server.final(client_final)
    assert server_final == "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    client.verify(server_final)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_refuses_a_wrong_password_and_a_server_without_the_credential(mechanism):
    credential = make_credential("right", mechanism, 4096)
    for password, ok in (("right", True), ("wrong", False)):
        client = ScramClient("alice", password, mechanism)
        server = ScramServer(mechanism)
        final = client.final(server.first(client.first(), credential, b"x" * 16))
        if ok:
            client.verify(server.final(final))
        else:
            with pytest.raises(AuthenticationFailed, match="wrong user name or password"):
                server.final(final)
    impostor = ScramServer(mechanism)  # knows the salt but not the server key
    client = ScramClient("alice", "right", mechanism)
    final = client.final(impostor.first(client.first(), credential, b""))
    with pytest.raises(AuthenticationFailed, match="not this broker"):
        client.verify("v=" + base64.b64encode(b"\0" * 32).decode())
    del final


def test_an_unknown_user_gets_a_stable_challenge_and_the_same_refusal():
    def attempt() -> tuple[str, str]:
        client = ScramClient("nobody", "pw")
        server = ScramServer("SCRAM-SHA-256")
        first = server.first(client.first(), None, b"decoy-salt-16byt")
        with pytest.raises(AuthenticationFailed) as refused:
            server.final(client.final(first))
        return first.split(",")[1], str(refused.value)

    assert attempt() == attempt()  # same salt each time, same message as a wrong password
    assert attempt()[1] == "wrong user name or password"


@pytest.mark.parametrize("message", ["", "y,,n=a,r=b", "n,,r=abc", "n,,n=a", "n,," + "x" * 5000, 7])
def test_malformed_scram_messages_are_refused_with_a_typed_error(message):
    with pytest.raises(AuthenticationFailed):
        ScramServer("SCRAM-SHA-256").first(message, None, b"")


def test_unknown_mechanism_is_a_typed_error():
    with pytest.raises(AuthenticationFailed, match="unknown SASL mechanism"):
        ScramServer("PLAIN-OLD")


# --- tokens ---------------------------------------------------------------------------------


def test_tokens_verify_expire_and_refuse_forgery():
    now = [1_000_000]
    signer = TokenSigner({"k1": b"s" * 32}, "k1", lambda: now[0])
    token = signer.issue("acme/bob", "acme", 3, 60_000)
    claims = signer.verify(token)
    assert (claims.principal, claims.tenant, claims.generation) == ("User:acme/bob", "acme", 3)
    head, body, mac = token.split(".")
    forged_body = (
        base64.urlsafe_b64encode(
            base64.urlsafe_b64decode(body + "==").replace(b"acme/bob", b"acme/bos")
        )
        .rstrip(b"=")
        .decode()
    )
    for bad in (f"{head}.{forged_body}.{mac}", token[:-2] + "AA", "rbt1.x.y", "", None, 5):
        with pytest.raises(AuthenticationFailed):
            signer.verify(bad)
    other_key = TokenSigner({"k1": b"t" * 32}, "k1", lambda: now[0])
    with pytest.raises(AuthenticationFailed, match="signature"):
        other_key.verify(token)
    now[0] += 60_001
    with pytest.raises(AuthenticationFailed, match="expired"):
        signer.verify(token)


def test_a_rotated_key_still_verifies_tokens_of_the_previous_one(tmp_path):
    registry = SecurityRegistry(MetadataStore(tmp_path / "s"), tmp_path / "keys", enable=True)
    registry.create_user("alice", credentials_for("pw"), superuser=True)
    token = _login(registry, "alice", "pw")["token"]
    registry.rotate_key()
    guard = AccessGuard("internal", registry.policy())
    assert guard.authenticate(token).principal == "User:alice"
    registry.rotate_key()  # two rotations: the first key is gone
    guard.apply(registry.policy())
    with pytest.raises(AuthenticationFailed):
        guard.authenticate(token)
    assert oct((tmp_path / "keys").stat().st_mode & 0o777) == "0o600"


# --- the registry: users, logins, replay, brute force ----------------------------------------


def _login(registry: SecurityRegistry, user: str, password: str) -> dict:
    client = ScramClient(user, password)
    first = registry.login_first("SCRAM-SHA-256", client.first())
    answer = registry.login_final(client.final(first))
    client.verify(answer["server_final"])
    return answer


def test_login_replay_and_password_change(tmp_path):
    clock = FakeClock()
    registry = SecurityRegistry(
        MetadataStore(tmp_path / "s"), tmp_path / "keys", enable=True, clock=clock
    )
    registry.create_user("alice", credentials_for("secret-1"))
    client = ScramClient("alice", "secret-1")
    final = client.final(registry.login_first("SCRAM-SHA-256", client.first()))
    token = registry.login_final(final)["token"]
    with pytest.raises(AuthenticationFailed, match="replayed or stale"):
        registry.login_final(final)
    guard = AccessGuard("internal", registry.policy())
    assert guard.authenticate(token).user == "alice"
    registry.create_user("alice", credentials_for("secret-2"))  # ends the old sessions
    guard.apply(registry.policy())
    with pytest.raises(AuthenticationFailed, match="password changed"):
        guard.authenticate(token)
    with pytest.raises(AuthenticationFailed):
        _login(registry, "alice", "secret-1")
    assert _login(registry, "alice", "secret-2")["token"]
    stored = (tmp_path / "s").rglob("*")
    assert not any(b"secret-2" in p.read_bytes() for p in stored if p.is_file())


def test_brute_force_is_slowed_per_user_and_unknown_users_are_treated_alike(tmp_path):
    clock = FakeClock()
    registry = SecurityRegistry(
        MetadataStore(tmp_path / "s"), tmp_path / "keys", enable=True, clock=clock
    )
    registry.create_user("alice", credentials_for("pw"))
    registry.create_user("bob", credentials_for("pw"))
    for user in ("alice", "ghost"):
        for _ in range(5):
            with pytest.raises(AuthenticationFailed, match="wrong user name or password"):
                _login(registry, user, "guess")
        with pytest.raises(AuthenticationFailed, match="too many failed logins") as locked:
            _login(registry, user, "pw")
        assert locked.value.retry_after_ms > 0
    assert _login(registry, "bob", "pw")["token"]  # others keep full service
    clock.now += 1.01
    assert _login(registry, "alice", "pw")["token"]  # the wait is over; success clears it
    with pytest.raises(AuthenticationFailed, match="wrong"):
        _login(registry, "alice", "guess")


def test_users_acls_and_quotas_survive_a_restart(tmp_path):
    registry = SecurityRegistry(MetadataStore(tmp_path / "s"), tmp_path / "keys", enable=True)
    registry.create_user("acme/bob", credentials_for("pw"))
    registry.create_acls([Acl("User:acme/bob", "topic", "acme.", "read", pattern="prefixed")])
    registry.alter_quotas(QuotaEntity(user="acme/bob"), {"producer_byte_rate": 1000})
    reopened = SecurityRegistry(MetadataStore(tmp_path / "s"), tmp_path / "keys", enable=False)
    assert reopened.enabled, "security stays on once switched on"
    assert [u.name for u in reopened.list_users()] == ["acme/bob"]
    assert reopened.describe_acls(None, None, None) == registry.acls
    assert reopened.describe_quotas() == {"user=acme/bob": {"producer_byte_rate": 1000.0}}
    assert reopened.policy().version > registry.policy().version - 10**6


@pytest.mark.parametrize(
    ("name", "password"),
    [("", "pw"), ("a,b", "pw"), ("__broker", "pw"), ("a/b/c", "pw"), ("ok", ""), ("ok", 5)],
)
def test_bad_user_specs_are_refused(tmp_path, name, password):
    registry = SecurityRegistry(MetadataStore(tmp_path / "s"), tmp_path / "keys", enable=True)
    with pytest.raises(InvalidAcl):
        registry.create_user(name, credentials_for(password))


@pytest.mark.parametrize(
    "credentials",
    [{}, {"SCRAM-SHA-256": {}}, {"MD5": {"mechanism": "MD5"}}, "pw", {"SCRAM-SHA-256": 1}],
)
def test_malformed_credentials_are_refused(tmp_path, credentials):
    registry = SecurityRegistry(MetadataStore(tmp_path / "s"), tmp_path / "keys", enable=True)
    with pytest.raises(InvalidAcl):
        registry.create_user("alice", credentials)


# --- ACLs -----------------------------------------------------------------------------------

OPS = ["read", "write", "create", "delete", "alter", "describe", "describe_configs"]


def test_the_acl_matrix_deny_wins_prefixes_and_implications():
    acls = [
        Acl("User:alice", "topic", "pay", "write"),
        Acl("User:alice", "topic", "pay", "read"),
        Acl("User:alice", "topic", "pay", "read", permission="deny"),
        Acl("User:bob", "topic", "logs.", "all", pattern="prefixed"),
        Acl("User:bob", "topic", "logs.secret", "read", permission="deny"),
        Acl("User:*", "topic", "public", "read"),
        Acl("User:carol", "group", "*", "read"),
    ]
    authorizer = Authorizer([checked_acl(a) for a in acls], superusers=["User:root"])
    expected = {
        ("User:alice", "topic", "pay"): {"write", "describe"},
        ("User:alice", "topic", "payroll"): set(),
        ("User:bob", "topic", "logs.app"): set(OPS),
        ("User:bob", "topic", "logs.secret"): set(OPS) - {"read"},
        ("User:bob", "topic", "log"): set(),
        ("User:carol", "topic", "public"): {"read", "describe"},
        ("User:carol", "group", "any-group"): {"read", "describe"},
        ("User:root", "cluster", "cluster"): set(OPS),
        (INTERNAL_PRINCIPAL, "topic", "pay"): set(OPS),
    }
    for (principal, rtype, name), allowed in expected.items():
        got = {op for op in OPS if authorizer.allowed(principal, op, rtype, name)}
        assert got == allowed, (principal, rtype, name)


def test_tenants_cannot_reach_across_whatever_the_acls_say():
    authorizer = Authorizer(
        [Acl("User:*", "topic", "*", "all"), Acl("User:*", "group", "*", "all")]
    )
    assert authorizer.allowed("User:acme/bob", "read", "topic", "acme.orders")
    assert not authorizer.allowed("User:acme/bob", "read", "topic", "globex.orders")
    assert not authorizer.allowed("User:acme/bob", "read", "topic", "orders")
    assert not authorizer.allowed("User:acme/bob", "alter", "cluster", "cluster")
    assert authorizer.allowed("User:plain", "read", "topic", "globex.orders")
    with pytest.raises(InvalidAcl, match="tenant"):
        checked_acl(Acl("User:acme/bob", "topic", "globex.", "read", pattern="prefixed"))


@pytest.mark.parametrize(
    "acl",
    [
        Acl("alice", "topic", "t", "read"),
        Acl("User:alice", "table", "t", "read"),
        Acl("User:alice", "topic", "t", "fly"),
        Acl("User:alice", "topic", "t", "read", permission="maybe"),
        Acl("User:alice", "topic", "t", "read", pattern="regex"),
        Acl("User:alice", "topic", "", "read"),
        Acl("User:alice", "cluster", "prod", "alter"),
        "User:alice:read:t",
    ],
)
def test_malformed_acls_are_refused(acl):
    with pytest.raises(InvalidAcl):
        checked_acl(acl)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["User:a", "User:*"]),
            st.sampled_from(["t", "t.", "*"]),
            st.sampled_from(["read", "write", "all"]),
            st.sampled_from(["allow", "deny"]),
            st.sampled_from(["literal", "prefixed"]),
        ),
        max_size=6,
    ),
    st.sampled_from(["t", "t.x", "u"]),
    st.sampled_from(["read", "write"]),
)
def test_deny_always_wins(rules, name, operation):
    acls = [Acl(p, "topic", n, o, perm, pat) for p, n, o, perm, pat in rules]
    allowed = Authorizer(acls).allowed("User:a", operation, "topic", name)
    denied = any(
        a.permission == "deny"
        and a.operation in (operation, "all")
        and (
            a.name.startswith("")
            and (name.startswith(a.name) if a.pattern == "prefixed" else a.name in (name, "*"))
        )
        for a in acls
    )
    if denied:
        assert not allowed


# --- the guard ------------------------------------------------------------------------------


def test_the_guard_refuses_forged_expired_and_missing_sessions_and_says_who_and_what(tmp_path):
    registry = SecurityRegistry(MetadataStore(tmp_path / "s"), tmp_path / "keys", enable=True)
    registry.create_user("alice", credentials_for("pw"))
    registry.create_acls([Acl("User:alice", "topic", "pay", "write")])
    token = _login(registry, "alice", "pw")["token"]
    guard = AccessGuard("internal-token", registry.policy())
    assert guard.check(token, "write", "topic", "pay").principal == "User:alice"
    with pytest.raises(Unauthorized) as refused:
        guard.check(token, "read", "topic", "pay")
    assert (refused.value.principal, refused.value.operation, refused.value.resource) == (
        "User:alice",
        "read",
        "topic:pay",
    )
    for bad in (None, "", token + "x", "internal-token-not"):
        with pytest.raises(AuthenticationFailed):
            guard.check(bad, "write", "topic", "pay")
    guard.check("internal-token", "delete", "topic", "pay")  # the broker itself
    with pytest.raises(Unauthorized):
        guard.check_internal(token, "replication")
    off = AccessGuard("internal-token", SecurityPolicy(version=1, enabled=False))
    assert off.check(None, "delete", "cluster", "cluster").principal == "User:ANONYMOUS"


def test_an_older_policy_never_replaces_a_newer_one(tmp_path):
    guard = AccessGuard("i")
    assert guard.apply(SecurityPolicy(version=5, enabled=False))
    assert not guard.apply(SecurityPolicy(version=4, enabled=True))
    assert not guard.enabled


def test_session_handles_add_the_session_to_every_call():
    calls = []

    class Method:
        def remote(self, *args, **kwargs):
            calls.append((args, kwargs))
            return "ref"

        def options(self, **options):
            return self

    class Handle:
        produce = Method()
        name = "plain attribute"

    handle = SessionHandle(Handle(), lambda: "tok")
    assert handle.produce.remote(1, acks=-1) == "ref"
    assert handle.produce.options(name="x").remote() == "ref"
    assert calls == [((1,), {"session": "tok", "acks": -1}), ((), {"session": "tok"})]
    assert handle.name == "plain attribute"


# --- quotas ---------------------------------------------------------------------------------


def test_a_throttled_stream_converges_to_its_quota():
    clock = FakeClock()
    meter = RateMeter(window_s=1.0, windows=11, clock=clock)
    quota, sent = 1000.0, 0.0
    start = clock.now
    for _ in range(2000):  # a client sending 500-byte requests as fast as it is let
        sent += 500
        delay = meter.record("user=a", 500, quota)
        clock.now += 0.001 + delay / 1000
    rate = sent / (clock.now - start)
    assert quota * 0.8 <= rate <= quota * 1.2, rate


@pytest.mark.parametrize("in_flight", [1, 5, 50])
def test_pipelined_requests_converge_to_the_quota_too(in_flight):
    """Requests sent while earlier ones are held back (a producer's max.in.flight) must not
    multiply the rate: each waits for the throttle of the ones before it, as Kafka's muted
    channel makes them."""
    clock = FakeClock()
    meter = RateMeter(window_s=0.1, windows=11, clock=clock)
    quota, size = 100_000.0, 10_000
    answers: list[float] = []  # when each in-flight request is answered
    acknowledged = 0
    start = clock.now
    while clock.now - start < 20:
        while len(answers) < in_flight:
            answers.append(clock.now + 0.0005 + meter.record("p:user=a", size, quota) / 1000)
        answers.sort()
        clock.now = max(clock.now, answers.pop(0))
        acknowledged += size
    rate = acknowledged / (clock.now - start)
    assert quota * 0.8 <= rate <= quota * 1.2, rate


def test_quota_buckets_survive_a_policy_change_and_go_with_their_quota():
    clock = FakeClock()
    meter = RateMeter(window_s=0.1, windows=11, clock=clock)
    first = meter.record("producer_byte_rate:user=a", 10_000, 1000.0)
    meter.forget(["user=a"])
    assert meter.record("producer_byte_rate:user=a", 10_000, 1000.0) > first
    meter.forget([])
    assert meter.record("producer_byte_rate:user=a", 1, 1000.0) == 0


def test_controller_mutations_over_quota_are_refused_and_not_counted(tmp_path):
    clock = FakeClock()
    guard = AccessGuard(
        "i",
        SecurityPolicy(
            version=1,
            enabled=True,
            keys={"k": b"k" * 32},
            current_key="k",
            users={"a": 1},
            quotas={"user=a": {"controller_mutation_rate": 1.0}},
            quota_window_ms=1000,
        ),
        clock=clock,
    )
    claims = SessionClaims("User:a", "a", None, 1, 2**62, "s")
    guard.admit_mutation(claims, 30)  # within the quota so far: admitted whole, however large
    with pytest.raises(QuotaExceeded) as refused:
        guard.admit_mutation(claims, 1)
    assert refused.value.retriable and refused.value.throttle_ms > 0
    wait_s = refused.value.throttle_ms / 1000
    assert wait_s <= 11.01  # at worst until the 30 age out of the 11 one-second windows
    clock.now += wait_s - 0.01
    with pytest.raises(QuotaExceeded):
        guard.admit_mutation(claims, 1)  # not yet (and refused attempts are not counted)...
    clock.now += 0.02
    guard.admit_mutation(claims, 1)  # ...the answer said when, and it was right


def test_unthrottled_traffic_is_never_delayed():
    clock = FakeClock()
    meter = RateMeter(clock=clock)
    for _ in range(100):
        assert meter.record("k", 10, 1e9) == 0
        clock.now += 0.01


def test_quota_resolution_prefers_the_most_specific_entity():
    book = QuotaBook(
        {
            "user=a,client=app": {"producer_byte_rate": 1.0},
            "user=a": {"producer_byte_rate": 2.0},
            "tenant=acme": {"producer_byte_rate": 3.0},
            "client=app": {"producer_byte_rate": 4.0},
        }
    )
    assert book.limit("producer_byte_rate", "a", None, "app") == ("user=a,client=app", 1.0)
    assert book.limit("producer_byte_rate", "a", None, "other") == ("user=a", 2.0)
    assert book.limit("producer_byte_rate", "acme/z", "acme", "x") == ("tenant=acme", 3.0)
    assert book.limit("producer_byte_rate", None, None, "app") == ("client=app", 4.0)
    assert book.limit("consumer_byte_rate", "a", None, "app") is None


@pytest.mark.parametrize(
    ("entity", "values"),
    [
        (QuotaEntity(), {"producer_byte_rate": 1}),
        (QuotaEntity(user="a", tenant="t"), {"producer_byte_rate": 1}),
        (QuotaEntity(user=""), {"producer_byte_rate": 1}),
        (QuotaEntity(user="a"), {"producer_byte_rate": -1}),
        (QuotaEntity(user="a"), {"producer_byte_rate": float("inf")}),
        (QuotaEntity(user="a"), {"producer_byte_rate": 1e30}),
        (QuotaEntity(user="a"), {"producer_byte_rate": True}),
        (QuotaEntity(user="a"), {"bytes": 1}),
        (QuotaEntity(user="a"), {}),
        ("user=a", {"producer_byte_rate": 1}),
    ],
)
def test_absurd_quotas_are_refused(entity, values):
    with pytest.raises(InvalidAcl):
        entity_key(entity)
        checked_quota_values(values)


def test_every_operation_pair_is_decided(tmp_path):
    authorizer = Authorizer([Acl("User:a", "topic", "t", op) for op in OPS])
    for op, rtype in itertools.product(OPS, ["topic", "group"]):
        assert authorizer.allowed("User:a", op, rtype, "t") == (rtype == "topic")


def test_only_the_broker_itself_may_push_rules_whether_security_is_on_or_off():
    for enabled in (False, True):
        guard = AccessGuard("internal-token", SecurityPolicy(version=1, enabled=enabled))
        newer = SecurityPolicy(version=2, enabled=False)
        for intruder in ("", None, "internal-token-not", 7):
            with pytest.raises(Unauthorized):
                guard.accept(newer, intruder)
        assert guard.policy.version == 1
        assert guard.accept(newer, "internal-token")
        assert not guard.accept(SecurityPolicy(version=1, enabled=True), "internal-token")
