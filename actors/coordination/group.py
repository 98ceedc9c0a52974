"""One consumer group's membership and assignment, as a plain state machine (no Ray).

The coordinator computes a *target* assignment with the group's strategy whenever membership or
the subscribed topics change (each change is a new *generation*). A member is *granted* the part
of its target that no other member still reports owning, so a partition is never consumed by two
members at once: the old owner gives it up (and commits) before the new one gets it. This is the
broker-side assignment of Kafka's KIP-848; eager strategies give up everything at each generation
on the client, cooperative-sticky only what moves (KIP-429).

States: ``Empty`` (no members) → ``Reconciling`` (some member's owned set differs from its
target) → ``Stable`` (every member owns exactly its target); ``Dead`` after deletion.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import regex

from ray_broker.actors.coordination.assignors import ASSIGNORS, STRATEGIES, TopicPartitionKey
from ray_broker.errors import (
    CommitFailed,
    IllegalGeneration,
    InconsistentGroupProtocol,
    InvalidConfig,
)


class GroupState(str, enum.Enum):
    EMPTY = "Empty"
    RECONCILING = "Reconciling"
    STABLE = "Stable"
    DEAD = "Dead"


logger = logging.getLogger(__name__)

# A subscription pattern runs on the coordinator's only event loop: a catastrophic pattern
# such as ``(a+)+b`` must not stall heartbeats of every group, so matching all topic names
# against one pattern gets this much time (the ``regex`` library enforces it), then stops.
PATTERN_MATCH_BUDGET_S = 0.05


def compile_pattern(pattern: str) -> regex.Pattern[str]:
    """Raises InvalidConfig for a pattern that does not compile."""
    try:
        return regex.compile(pattern)
    except (regex.error, TypeError) as exc:
        raise InvalidConfig(f"bad subscription pattern {pattern!r}: {exc}") from None


def match_topics(pattern: str, topics: Iterable[str]) -> set[str]:
    """Topics (internal ones excluded) that fully match ``pattern``, within the time budget;
    a pattern that exhausts it matches only what it matched so far."""
    compiled = compile_pattern(pattern)
    deadline = time.monotonic() + PATTERN_MATCH_BUDGET_S
    matched = set()
    for topic in topics:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            if not topic.startswith("__") and compiled.fullmatch(topic, timeout=remaining):
                matched.add(topic)
        except TimeoutError:
            logger.warning("subscription pattern %r exceeded its time budget", pattern)
            break
    return matched


@dataclass
class Member:
    member_id: str
    instance_id: str | None
    client_id: str
    topics: list[str]  # explicit subscription (empty with a pattern)
    pattern: str | None
    session_timeout_ms: int
    last_seen_ms: int
    subscribed: set[str] = field(default_factory=set)  # topics resolved against the metadata
    owned: set[TopicPartitionKey] = field(default_factory=set)
    target: set[TopicPartitionKey] = field(default_factory=set)

    def resolve(self, partitions: Mapping[str, int]) -> None:
        if self.pattern is not None:
            self.subscribed = match_topics(self.pattern, partitions)
        else:
            self.subscribed = {t for t in self.topics if t in partitions}


def _rank(member: Member) -> str:
    """The name a member is ordered by in assignment: static members by instance id, first."""
    if member.instance_id:
        return f"0:{member.instance_id}"
    return f"1:{member.member_id}"


@dataclass(frozen=True)
class Heartbeat:
    """What a member learns from the coordinator: its generation and what it may consume."""

    member_id: str
    generation: int
    granted: list[TopicPartitionKey]
    target: list[TopicPartitionKey]
    state: str


class Group:
    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.generation = 0
        self.strategy: str | None = None
        self.members: dict[str, Member] = {}
        self.partitions: dict[str, int] = {}

    # --- state ------------------------------------------------------------------------------

    @property
    def state(self) -> GroupState:
        if not self.members:
            return GroupState.EMPTY
        if all(m.owned == m.target for m in self.members.values()):
            return GroupState.STABLE
        return GroupState.RECONCILING

    def granted(self, member: Member) -> set[TopicPartitionKey]:
        others = set().union(*(m.owned for m in self.members.values() if m is not member))
        return member.target - others

    def _heartbeat(self, member: Member) -> Heartbeat:
        return Heartbeat(
            member.member_id,
            self.generation,
            sorted(self.granted(member)),
            sorted(member.target),
            self.state.value,
        )

    def _member(self, member_id: str) -> Member:
        try:
            return self.members[member_id]
        except KeyError:
            raise IllegalGeneration(
                f"member {member_id} is not in group {self.group_id!r} (generation "
                f"{self.generation}): it left or missed its session timeout; rejoin to continue"
            ) from None

    # --- membership -------------------------------------------------------------------------

    def join(
        self,
        member_id: str | None,
        instance_id: str | None,
        client_id: str,
        topics: list[str],
        pattern: str | None,
        strategy: str,
        session_timeout_ms: int,
        now_ms: int,
    ) -> Heartbeat:
        """Add (or re-add) a member and return its first heartbeat.

        A static member (``instance_id``) that rejoins takes over its previous target under a
        new member id without a new generation; the old id is fenced.

        Raises:
            InconsistentGroupProtocol: the strategy differs from the group's.
        """
        if strategy not in STRATEGIES:
            raise InvalidConfig(
                f"partition.assignment.strategy must be one of {sorted(STRATEGIES)}, "
                f"got {strategy!r}"
            )
        if self.members and strategy != self.strategy:
            raise InconsistentGroupProtocol(
                f"group {self.group_id!r} uses partition.assignment.strategy={self.strategy!r}; "
                f"this consumer asked for {strategy!r}"
            )
        self.strategy = strategy
        if member_id is not None and member_id in self.members:
            member = self.members[member_id]
            member.last_seen_ms = now_ms
            return self._heartbeat(member)
        previous = next(
            (m for m in self.members.values() if instance_id and m.instance_id == instance_id),
            None,
        )
        member = Member(
            member_id=f"{client_id}-{uuid.uuid4().hex[:12]}",
            instance_id=instance_id,
            client_id=client_id,
            topics=list(topics),
            pattern=pattern,
            session_timeout_ms=session_timeout_ms,
            last_seen_ms=now_ms,
        )
        member.resolve(self.partitions)
        if previous is not None and previous.subscribed == member.subscribed:
            del self.members[previous.member_id]  # fenced: its commits now fail
            member.target = previous.target
            self.members[member.member_id] = member
            return self._heartbeat(member)
        if previous is not None:
            del self.members[previous.member_id]
        self.members[member.member_id] = member
        self._rebalance()
        return self._heartbeat(member)

    def heartbeat(self, member_id: str, owned: list[TopicPartitionKey], now_ms: int) -> Heartbeat:
        """Record what the member owns now; answer with what it may own.

        Raises:
            IllegalGeneration: the member is not (any more) in the group.
        """
        member = self._member(member_id)
        member.last_seen_ms = now_ms
        # Trust the report for what the member gave up; it can only own what it had or was
        # granted. Partitions it still owns stay blocked for others until it reports otherwise.
        reported: set[TopicPartitionKey] = {(str(t), int(p)) for t, p in owned}
        member.owned = reported & (member.owned | self.granted(member))
        return self._heartbeat(member)

    def leave(self, member_id: str) -> bool:
        if self.members.pop(member_id, None) is None:
            return False
        self._rebalance()
        return True

    def expire(self, now_ms: int) -> list[str]:
        """Remove members whose session timed out; returns their ids."""
        gone = [
            m.member_id
            for m in self.members.values()
            if now_ms - m.last_seen_ms > m.session_timeout_ms
        ]
        for member_id in gone:
            del self.members[member_id]
        if gone:
            self._rebalance()
        return gone

    def update_partitions(self, partitions: Mapping[str, int]) -> bool:
        """New topic metadata; rebalance if a subscribed topic appeared, vanished or grew."""
        self.partitions = dict(partitions)
        before = {m.member_id: set(m.subscribed) for m in self.members.values()}
        for member in self.members.values():
            member.resolve(self.partitions)
        return self._rebalance(
            force=any(before[m.member_id] != m.subscribed for m in self.members.values())
        )

    def _rebalance(self, force: bool = False) -> bool:
        """Recompute targets; a new generation if any target changed."""
        if not self.members:
            return False
        # The assignors order members by name. Static members are named by their instance id
        # (and come first, as in Kafka's KIP-345), so a restarted static member whose new member
        # id sorts elsewhere still gets the same range after any later rebalance.
        by_rank = {_rank(m): m for m in self.members.values()}
        subscriptions = {rank: m.subscribed for rank, m in by_rank.items()}
        relevant = {
            t: n for t, n in self.partitions.items() if any(t in s for s in subscriptions.values())
        }
        current = {rank: m.target for rank, m in by_rank.items()}
        assert self.strategy is not None
        targets = ASSIGNORS[self.strategy](subscriptions, relevant, current)
        changed = any(targets[rank] != current[rank] for rank in targets)
        for rank, target in targets.items():
            by_rank[rank].target = target
        if changed or force:
            self.generation += 1
        return changed

    # --- commits ----------------------------------------------------------------------------

    def check_commit(self, member_id: str | None, partitions: list[TopicPartitionKey]) -> None:
        """Only the member that may consume a partition commits it.

        A consumer with manual assignment (``member_id`` None) may commit only while the group
        has no members, as in Kafka.

        Raises:
            IllegalGeneration: the member was removed from the group (a zombie).
            CommitFailed: a partition is not assigned to this member (any more), or the group has
                members and the committer is not one of them.
        """
        if member_id is None:
            if self.members:
                raise CommitFailed(
                    f"group {self.group_id!r} has active members; a consumer outside the group "
                    "cannot commit for it"
                )
            return
        member = self._member(member_id)
        allowed = member.owned | self.granted(member)
        foreign = [tp for tp in partitions if tuple(tp) not in allowed]
        if foreign:
            names = ", ".join(f"{t}-{p}" for t, p in foreign)
            raise CommitFailed(
                f"cannot commit {names}: not assigned to member {member_id} in generation "
                f"{self.generation} of group {self.group_id!r} (a rebalance moved them); "
                "poll() to get the new assignment"
            )
