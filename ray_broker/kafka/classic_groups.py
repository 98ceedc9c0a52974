"""Kafka's classic consumer-group protocol (JoinGroup / SyncGroup / Heartbeat / LeaveGroup).

Kafka clients assign partitions themselves: the broker elects a leader member, hands it every
member's subscription, and relays the leader's assignment to the others, bytes it never reads.
The broker's own group coordinator assigns on the server side (its clients are ours), so the
listener runs this state machine itself and keeps committed offsets in the broker's group
coordinator (``group_handlers.py``). A plain class: the listener drives it with the clock and a
periodic ``tick``; tests drive it with a fake clock.

States follow Kafka's ``GroupMetadata``: Empty → PreparingRebalance (members (re)join; the
join barrier waits for every known member, or the rebalance timeout, and — for a group that
was empty — ``group.initial.rebalance.delay.ms`` so members starting together share one
generation) → CompletingRebalance (the leader's SyncGroup brings the assignment) → Stable.
Membership is soft state, as in Kafka: after a listener restart members get
UNKNOWN_MEMBER_ID and join again; their committed offsets are durable elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ray_broker.config import GROUP_INITIAL_REBALANCE_DELAY_MS
from ray_broker.kafka.error_codes import ErrorCode

logger = logging.getLogger(__name__)

EMPTY = "Empty"
PREPARING = "PreparingRebalance"
COMPLETING = "CompletingRebalance"
STABLE = "Stable"

MIN_SESSION_TIMEOUT_MS = 6_000  # Kafka's group.min.session.timeout.ms
MAX_SESSION_TIMEOUT_MS = 1_800_000  # Kafka's group.max.session.timeout.ms
MAX_GROUPS = 100_000


@dataclass(frozen=True)
class JoinResult:
    error: ErrorCode
    member_id: str
    generation: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    members: list[tuple[str, str | None, bytes]] = field(default_factory=list)


@dataclass
class Member:
    member_id: str
    instance_id: str | None
    client_id: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: list[tuple[str, bytes]]
    deadline: float  # the session ends then without a heartbeat
    assignment: bytes = b""
    # JoinGroup requests waiting at the barrier: a client that gave up on one and sent another
    # gets both answered alike (Kafka answers in order on a connection; none may hang).
    joining: list[asyncio.Future[JoinResult]] = field(default_factory=list)
    syncing: asyncio.Future[tuple[ErrorCode, bytes]] | None = None

    def supports(self, protocol: str) -> bool:
        return any(name == protocol for name, _ in self.protocols)

    def metadata(self, protocol: str) -> bytes:
        return next(data for name, data in self.protocols if name == protocol)


class ClassicGroup:
    """One group's membership and generation."""

    def __init__(self, group_id: str, clock: Callable[[], float], initial_delay_ms: int) -> None:
        self.group_id = group_id
        self._clock = clock
        self._initial_delay_s = initial_delay_ms / 1000
        self.state = EMPTY
        self.generation = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader: str | None = None
        self.members: dict[str, Member] = {}
        self.pending: dict[str, float] = {}  # member ids handed out (KIP-394), until joined
        self._rebalance_deadline = 0.0
        self._delay_deadline = 0.0

    # --- requests -----------------------------------------------------------------------------

    def join(
        self,
        member_id: str,
        instance_id: str | None,
        client_id: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        require_known_member_id: bool,
    ) -> asyncio.Future[JoinResult]:
        """The JoinGroup answer, ready now or when the join barrier completes."""
        answer: asyncio.Future[JoinResult] = asyncio.get_running_loop().create_future()
        error = self._join_error(member_id, session_timeout_ms, protocol_type, protocols)
        if error is not None:
            answer.set_result(JoinResult(error, member_id))
            return answer
        now = self._clock()
        if not member_id:
            member_id = self._static_member(instance_id) or _new_member_id(client_id)
            if require_known_member_id and member_id not in self.members:
                self.pending[member_id] = now + session_timeout_ms / 1000
                answer.set_result(JoinResult(ErrorCode.MEMBER_ID_REQUIRED, member_id))
                return answer
        self.pending.pop(member_id, None)
        member = self.members.get(member_id)
        unchanged = member is not None and member.protocols == protocols
        if member is None:
            member = Member(
                member_id,
                instance_id,
                client_id,
                session_timeout_ms,
                rebalance_timeout_ms,
                protocols,
                now + session_timeout_ms / 1000,
            )
            self.members[member_id] = member
        else:
            member.protocols = protocols
            member.session_timeout_ms = session_timeout_ms
            member.rebalance_timeout_ms = rebalance_timeout_ms
            member.deadline = now + session_timeout_ms / 1000
        if self.protocol_type is None:
            self.protocol_type = protocol_type
        # Kafka's rules: nothing changed → the current generation, except that a leader
        # rejoining a stable group asks for a rebalance (topic metadata may have changed).
        if unchanged and (
            self.state == COMPLETING or (self.state == STABLE and member_id != self.leader)
        ):
            answer.set_result(self._result(member_id))
            return answer
        member.joining.append(answer)
        logger.info(
            "group %s: %s joins (%s, generation %d)",
            self.group_id,
            member_id,
            self.state,
            self.generation,
        )
        if self.state != PREPARING:
            self._prepare_rebalance(now)
        else:
            # Kafka extends the initial delay with each new member, up to the rebalance timeout.
            if self._delay_deadline > now:
                self._delay_deadline = min(now + self._initial_delay_s, self._rebalance_deadline)
            self._rebalance_deadline = max(
                self._rebalance_deadline, now + rebalance_timeout_ms / 1000
            )
        self.tick()
        return answer

    def sync(
        self, member_id: str, generation: int, assignments: dict[str, bytes]
    ) -> asyncio.Future[tuple[ErrorCode, bytes]]:
        answer: asyncio.Future[tuple[ErrorCode, bytes]] = asyncio.get_running_loop().create_future()
        member = self.members.get(member_id)
        if member is None:
            answer.set_result((ErrorCode.UNKNOWN_MEMBER_ID, b""))
        elif generation != self.generation:
            answer.set_result((ErrorCode.ILLEGAL_GENERATION, b""))
        elif self.state == PREPARING:
            answer.set_result((ErrorCode.REBALANCE_IN_PROGRESS, b""))
        elif self.state == STABLE:
            answer.set_result((ErrorCode.NONE, member.assignment))
        else:  # completing: the leader's assignment ends it
            self._touch(member)
            member.syncing = answer
            if member_id == self.leader:
                for each in self.members.values():
                    each.assignment = assignments.get(each.member_id, b"")
                self.state = STABLE
                for each in self.members.values():
                    if each.syncing is not None and not each.syncing.done():
                        each.syncing.set_result((ErrorCode.NONE, each.assignment))
                    each.syncing = None
        return answer

    def heartbeat(self, member_id: str, generation: int) -> ErrorCode:
        member = self.members.get(member_id)
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if self.state == PREPARING:
            self._touch(member)
            return ErrorCode.REBALANCE_IN_PROGRESS
        if generation != self.generation:
            return ErrorCode.ILLEGAL_GENERATION
        self._touch(member)
        return ErrorCode.NONE

    def leave(self, member_id: str) -> ErrorCode:
        if member_id not in self.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        self._remove(member_id, "left")
        return ErrorCode.NONE

    def check_commit(self, member_id: str, generation: int) -> ErrorCode:
        """Whether a member may commit offsets now (Kafka's ``doCommitOffsets`` rules)."""
        if generation < 0 and not member_id:
            return ErrorCode.NONE if self.state == EMPTY else ErrorCode.ILLEGAL_GENERATION
        member = self.members.get(member_id)
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if self.state == COMPLETING:
            return ErrorCode.REBALANCE_IN_PROGRESS
        if generation != self.generation:
            return ErrorCode.ILLEGAL_GENERATION
        self._touch(member)
        return ErrorCode.NONE

    # --- time ---------------------------------------------------------------------------------

    def tick(self) -> None:
        """Expire silent members, complete a join barrier whose time has come."""
        now = self._clock()
        self.pending = {m: until for m, until in self.pending.items() if until > now}
        for member in list(self.members.values()):
            waiting = self.state == PREPARING and bool(member.joining)
            if member.deadline <= now and not waiting:
                self._remove(member.member_id, "session timed out")
        if self.state != PREPARING:
            return
        everyone = all(m.joining for m in self.members.values())
        if (everyone and now >= self._delay_deadline) or now >= self._rebalance_deadline:
            self._complete_join()

    @property
    def empty(self) -> bool:
        return self.state == EMPTY and not self.members and not self.pending

    # --- internals ----------------------------------------------------------------------------

    def _join_error(
        self,
        member_id: str,
        session_timeout_ms: int,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
    ) -> ErrorCode | None:
        if not MIN_SESSION_TIMEOUT_MS <= session_timeout_ms <= MAX_SESSION_TIMEOUT_MS:
            return ErrorCode.INVALID_SESSION_TIMEOUT
        if member_id and member_id not in self.members and member_id not in self.pending:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if not protocol_type or not protocols:
            return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        if self.members and self.protocol_type not in (None, protocol_type):
            return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        others = [m for m in self.members.values() if m.member_id != member_id]
        names = {name for name, _ in protocols}
        if others and not any(all(m.supports(n) for m in others) for n in names):
            return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        return None

    def _static_member(self, instance_id: str | None) -> str | None:
        """A static member (``group.instance.id``) coming back takes its old id."""
        if instance_id is None:
            return None
        for member in self.members.values():
            if member.instance_id == instance_id:
                return member.member_id
        return None

    def _touch(self, member: Member) -> None:
        member.deadline = self._clock() + member.session_timeout_ms / 1000

    def _prepare_rebalance(self, now: float) -> None:
        was_empty = self.state == EMPTY
        self.state = PREPARING
        for member in self.members.values():
            if member.syncing is not None and not member.syncing.done():
                member.syncing.set_result((ErrorCode.REBALANCE_IN_PROGRESS, b""))
            member.syncing = None
        timeout = max((m.rebalance_timeout_ms for m in self.members.values()), default=0)
        self._rebalance_deadline = now + timeout / 1000
        self._delay_deadline = (
            min(now + self._initial_delay_s, self._rebalance_deadline) if was_empty else now
        )

    def _remove(self, member_id: str, reason: str) -> None:
        logger.info("group %s: %s leaves (%s)", self.group_id, member_id, reason)
        member = self.members.pop(member_id)
        for joining in member.joining:
            if not joining.done():
                joining.set_result(JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id))
        if member.syncing is not None and not member.syncing.done():
            member.syncing.set_result((ErrorCode.UNKNOWN_MEMBER_ID, b""))
        if member_id == self.leader:
            self.leader = None
        if not self.members:
            if self.state != EMPTY:
                self.generation += 1
            self.state = EMPTY
            self.protocol_type = None
            self.protocol_name = None
        elif self.state in (STABLE, COMPLETING):
            self._prepare_rebalance(self._clock())
        if self.state == PREPARING:
            self.tick()

    def _complete_join(self) -> None:
        for member in [m for m in self.members.values() if not m.joining]:
            self._remove(member.member_id, "did not rejoin within the rebalance timeout")
        if not self.members:
            return
        self.generation += 1
        self.protocol_name = self._elect_protocol()
        if self.leader not in self.members:
            self.leader = next(iter(self.members))
        self.state = COMPLETING
        logger.info(
            "group %s: generation %d with %d members, leader %s, protocol %s",
            self.group_id,
            self.generation,
            len(self.members),
            self.leader,
            self.protocol_name,
        )
        now = self._clock()
        for member in self.members.values():
            member.deadline = now + member.session_timeout_ms / 1000
            joining, member.joining = member.joining, []
            for answer in joining:
                if not answer.done():
                    answer.set_result(self._result(member.member_id))

    def _elect_protocol(self) -> str:
        """Kafka's vote: every member votes for its most preferred protocol all support."""
        members = list(self.members.values())
        candidates = [n for n, _ in members[0].protocols if all(m.supports(n) for m in members)]
        votes = Counter(next(n for n, _ in m.protocols if n in candidates) for m in members)
        return max(candidates, key=lambda name: (votes[name], -candidates.index(name)))

    def _result(self, member_id: str) -> JoinResult:
        members = []
        if member_id == self.leader:
            members = [
                (m.member_id, m.instance_id, m.metadata(self.protocol_name or ""))
                for m in self.members.values()
            ]
        return JoinResult(
            ErrorCode.NONE,
            member_id,
            self.generation,
            self.protocol_type,
            self.protocol_name,
            self.leader or "",
            members,
        )


def _new_member_id(client_id: str) -> str:
    return f"{client_id or 'member'}-{uuid.uuid4()}"


class ClassicGroups:
    """Every classic group of one listener."""

    def __init__(
        self,
        clock: Callable[[], float],
        initial_delay_ms: int = GROUP_INITIAL_REBALANCE_DELAY_MS,
    ) -> None:
        self._clock = clock
        self._initial_delay_ms = initial_delay_ms
        self.groups: dict[str, ClassicGroup] = {}

    def get(self, group_id: str) -> ClassicGroup | None:
        return self.groups.get(group_id)

    def get_or_create(self, group_id: str) -> ClassicGroup | None:
        """None when the listener already tracks ``MAX_GROUPS`` groups."""
        group = self.groups.get(group_id)
        if group is None:
            if len(self.groups) >= MAX_GROUPS:
                self.tick()
                if len(self.groups) >= MAX_GROUPS:
                    return None
            group = self.groups[group_id] = ClassicGroup(
                group_id, self._clock, self._initial_delay_ms
            )
        return group

    def tick(self) -> None:
        for group_id, group in list(self.groups.items()):
            group.tick()
            if group.empty:
                del self.groups[group_id]
