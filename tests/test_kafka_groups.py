"""Kafka's classic group protocol as the listener runs it, driven with a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from ray_broker.kafka.classic_groups import (
    COMPLETING,
    EMPTY,
    PREPARING,
    STABLE,
    ClassicGroup,
    ClassicGroups,
)
from ray_broker.kafka.error_codes import ErrorCode as E

SESSION_MS = 10_000
REBALANCE_MS = 30_000
RANGE = [("range", b"range-meta"), ("roundrobin", b"rr-meta")]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def run(test):
    """Run an async test body with a fresh group on a fake clock."""

    def wrapper():
        clock = Clock()
        group = ClassicGroup("g", clock, initial_delay_ms=3_000)
        asyncio.run(test(group, clock))

    wrapper.__name__ = test.__name__
    return wrapper


def join(group, member_id="", protocols=RANGE, kip394=True, instance=None, session=SESSION_MS):
    return group.join(
        member_id, instance, "client", session, REBALANCE_MS, "consumer", protocols, kip394
    )


async def joined(group, clock, count):
    """``count`` members through KIP-394's two-step join; returns their first join futures."""
    futures = []
    for _ in range(count):
        first = await join(group)
        assert first.error == E.MEMBER_ID_REQUIRED
        futures.append(join(group, first.member_id))
    return futures


@run
async def test_members_that_start_together_share_one_generation_after_the_initial_delay(
    group, clock
):
    futures = await joined(group, clock, 2)
    assert group.state == PREPARING and not any(f.done() for f in futures)
    clock.advance(2.9)
    group.tick()
    assert not any(f.done() for f in futures)
    clock.advance(0.2)
    group.tick()
    results = [f.result() for f in futures]
    assert {r.error for r in results} == {E.NONE}
    assert {r.generation for r in results} == {1}
    leader = [r for r in results if r.member_id == r.leader]
    assert len(leader) == 1 and len(leader[0].members) == 2  # only the leader sees members
    assert all(not r.members for r in results if r.member_id != r.leader)
    assert group.state == COMPLETING and group.protocol_name == "range"


@run
async def test_the_leaders_assignment_reaches_every_member(group, clock):
    futures = await joined(group, clock, 2)
    clock.advance(3.1)
    group.tick()
    results = [f.result() for f in futures]
    leader = next(r for r in results if r.member_id == r.leader)
    follower = next(r for r in results if r.member_id != r.leader)
    waiting = group.sync(follower.member_id, 1, {})
    assert not waiting.done()  # followers wait for the leader
    plan = {leader.member_id: b"A", follower.member_id: b"B"}
    assert await group.sync(leader.member_id, 1, plan) == (E.NONE, b"A")
    assert await waiting == (E.NONE, b"B")
    assert group.state == STABLE
    assert group.heartbeat(follower.member_id, 1) == E.NONE
    assert group.heartbeat(follower.member_id, 0) == E.ILLEGAL_GENERATION
    assert group.heartbeat("stranger", 1) == E.UNKNOWN_MEMBER_ID


async def stable_pair(group, clock):
    futures = await joined(group, clock, 2)
    clock.advance(3.1)
    group.tick()
    results = [f.result() for f in futures]
    leader = next(r for r in results if r.member_id == r.leader)
    follower = next(r for r in results if r.member_id != r.leader)
    follower_sync = group.sync(follower.member_id, 1, {})
    await group.sync(leader.member_id, 1, {leader.member_id: b"A", follower.member_id: b"B"})
    await follower_sync
    return leader.member_id, follower.member_id


@run
async def test_a_new_member_makes_the_others_rejoin_through_their_heartbeats(group, clock):
    leader, follower = await stable_pair(group, clock)
    (third,) = await joined(group, clock, 1)
    assert group.state == PREPARING
    assert group.heartbeat(follower, 1) == E.REBALANCE_IN_PROGRESS
    again = [join(group, leader), join(group, follower)]
    results = [f.result() for f in [third, *again]]  # everyone is in: no delay (not empty)
    assert {r.generation for r in results} == {2}
    assert results[0].leader == leader  # the leader stays the leader


@run
async def test_a_silent_member_is_expired_and_the_group_rebalances(group, clock):
    leader, follower = await stable_pair(group, clock)
    clock.advance(SESSION_MS / 1000 / 2)
    assert group.heartbeat(leader, 1) == E.NONE
    clock.advance(SESSION_MS / 1000 / 2 + 0.1)
    group.tick()
    assert follower not in group.members and group.state == PREPARING
    rejoin = join(group, leader)
    assert rejoin.result().generation == 2 and rejoin.result().members[0][0] == leader


@run
async def test_a_member_missing_the_rebalance_timeout_is_dropped(group, clock):
    leader, follower = await stable_pair(group, clock)
    (third,) = await joined(group, clock, 1)
    rejoin = join(group, leader)
    for _ in range(10):  # the follower keeps heartbeating but never rejoins
        clock.advance(REBALANCE_MS / 1000 / 10)
        group.heartbeat(follower, 1)
        group.tick()
    assert third.done() and rejoin.done()
    assert follower not in group.members and rejoin.result().generation == 2


@run
async def test_leaving_rebalances_and_the_last_one_out_empties_the_group(group, clock):
    leader, follower = await stable_pair(group, clock)
    assert group.leave(follower) == E.NONE
    assert group.state == PREPARING
    assert group.leave("stranger") == E.UNKNOWN_MEMBER_ID
    assert group.leave(leader) == E.NONE
    assert group.state == EMPTY and not group.members


@run
async def test_join_refusals(group, clock):
    assert (await join(group, "made-up")).error == E.UNKNOWN_MEMBER_ID
    assert (await join(group, session=10)).error == E.INVALID_SESSION_TIMEOUT
    assert (await join(group, protocols=[])).error == E.INCONSISTENT_GROUP_PROTOCOL
    await joined(group, clock, 1)
    first = await join(group, protocols=[("sticky", b"")])
    assert first.error == E.INCONSISTENT_GROUP_PROTOCOL  # shares no protocol with the group


@run
async def test_clients_before_kip_394_join_in_one_step(group, clock):
    future = join(group, kip394=False)
    clock.advance(3.1)
    group.tick()
    assert future.result().error == E.NONE and future.result().member_id


@run
async def test_the_protocol_most_members_prefer_among_the_common_ones_wins(group, clock):
    for protocols in ([("a", b""), ("b", b"")], [("b", b""), ("a", b"")], [("b", b""), ("c", b"")]):
        join(group, kip394=False, protocols=protocols)
    clock.advance(3.1)
    group.tick()
    assert group.protocol_name == "b"


@run
async def test_commits_follow_kafkas_generation_rules(group, clock):
    assert group.check_commit("", -1) == E.NONE  # a standalone consumer, empty group
    leader, follower = await stable_pair(group, clock)
    assert group.check_commit("", -1) == E.ILLEGAL_GENERATION
    assert group.check_commit(leader, 1) == E.NONE
    assert group.check_commit(leader, 0) == E.ILLEGAL_GENERATION
    assert group.check_commit("stranger", 1) == E.UNKNOWN_MEMBER_ID
    await joined(group, clock, 1)
    assert group.check_commit(leader, 1) == E.NONE  # eager clients commit before rejoining


@run
async def test_a_static_member_coming_back_keeps_its_id(group, clock):
    first = join(group, kip394=False, instance="host-1")
    clock.advance(3.1)
    group.tick()
    member_id = first.result().member_id
    again = join(group, "", instance="host-1")
    assert again.result().member_id == member_id


def test_empty_groups_are_forgotten_and_the_count_is_bounded(monkeypatch):
    import ray_broker.kafka.classic_groups as module

    monkeypatch.setattr(module, "MAX_GROUPS", 2)
    clock = Clock()
    groups = ClassicGroups(clock)
    assert groups.get_or_create("a") and groups.get_or_create("b")

    async def fill():
        groups.get("a").join("", None, "c", SESSION_MS, REBALANCE_MS, "consumer", RANGE, False)
        groups.get("b").join("", None, "c", SESSION_MS, REBALANCE_MS, "consumer", RANGE, False)
        assert groups.get_or_create("c") is None
        for _ in range(2):  # the join completes, then nobody syncs or heartbeats
            clock.advance(REBALANCE_MS / 1000)
            groups.tick()
        assert groups.get_or_create("c") is not None

    asyncio.run(fill())
    assert set(groups.groups) == {"c"}


@pytest.mark.parametrize("state", [EMPTY])
def test_a_new_group_is_empty(state):
    assert ClassicGroup("g", Clock(), 0).state == state


@run
async def test_a_join_sent_again_while_waiting_gets_the_same_answer_as_the_first(group, clock):
    """A client whose poll gave up on its JoinGroup sends another; both are answered with the
    generation (Kafka answers a connection's requests in order: none may be dropped)."""
    (first,) = await joined(group, clock, 1)
    member_id = group.leader or next(iter(group.members))
    second = join(group, member_id)
    clock.advance(3.1)
    group.tick()
    assert first.result() == second.result() and first.result().generation == 1
    third = join(group, member_id)  # the leader again, the assignment not yet synced
    assert third.result().generation == 1 and group.state == COMPLETING
