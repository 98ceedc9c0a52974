"""A deterministic simulation of one replicated partition (TigerBeetle's VOPR, FoundationDB's
simulator, on a small scale).

One seed fixes everything: the network's drops, delays, duplicates and reorders, and the faults
— process crashes with restarts, frozen (hung) processes, network partitions and lost nodes.
The real decision code runs unchanged: ``Replica`` (roles, epochs, HW over the ISR, ISR
changes, KIP-101 truncation), ``FollowerSender`` (the leader's replication to each follower:
what to send next and what each answer means — the class ``PartitionActor`` ships),
``PartitionState`` and ``plan_partition`` (the Controller's elections and replacements),
``ProducerStates`` (idempotence) and ``LeaderEpochCache``. The shells here do what
``PartitionActor`` and the ``Controller`` do with Ray: deliver messages and wait.

After every event the invariants are checked:

* every record below any replica's high watermark agrees with the one committed history (so
  in-sync replicas agree below the HW, and a committed record never changes);
* a new leader holds the whole committed history (no acknowledged record is lost);
* an ``acks=all`` acknowledgement names committed records at their committed offsets, and no
  two replicas acknowledge writes for the same leader epoch;
* a leader's high watermark never moves back within its epoch;
* an idempotent producer's records are committed once each, in sequence order.

A broken invariant raises ``InvariantBroken`` carrying the seed and the event trace.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ray_broker.actors.controller.failover import plan_partition
from ray_broker.actors.controller.partition_state import PartitionState
from ray_broker.actors.partition.replica import Replica, Role
from ray_broker.actors.partition.replication import (
    EpochQuery,
    FollowerSender,
    Push,
    Request,
    Truncate,
)
from ray_broker.errors import BrokerError, FencedLeaderEpoch
from tests.sim.memory_partition import MemoryPartition, SimRecord

CONTROLLER = "controller"
CLIENT = "client"
PUSH_RECORDS = 20
REQUEST_TIMEOUT_S = 0.5
IDLE_PUSH_S = 0.05
ISR_CHECK_S = 0.1
CONTROLLER_CHECK_S = 0.25
LEADER_PROBE_TIMEOUT_S = 1.5
LAG_TIME_MAX_S = 1.0
ACKS_ALL_TIMEOUT_S = 2.0
MIN_INSYNC = 2
REPLICATION_FACTOR = 3


class InvariantBroken(AssertionError):
    """A broken invariant, with the seed that replays it and the events that led there."""

    def __init__(self, seed: int, message: str, trace: list[str]) -> None:
        self.seed, self.message, self.trace = seed, message, trace[-60:]
        tail = "\n".join(self.trace)
        super().__init__(f"seed {seed}: {message}\n--- last events ---\n{tail}")

    def __reduce__(self) -> tuple:  # crosses process boundaries in the parallel sweep
        return InvariantBroken, (self.seed, self.message, self.trace)


@dataclass(order=True)
class _Event:
    time: float
    order: int
    action: Callable[[], None] = field(compare=False)
    what: str = field(compare=False)


@dataclass
class Node:
    node_id: str
    up: bool = True  # process running (a crash sets False until the restart)
    removed: bool = False  # node lost for good, with its disk
    frozen_until: float = 0.0
    held: list[Callable[[], None]] = field(default_factory=list)
    incarnation: int = 0


@dataclass
class Link:
    sender: FollowerSender
    attempt: int = 0
    sent_at: float = -1.0  # < 0: nothing in flight


@dataclass
class Waiter:
    end: int
    epoch: int
    reply: Callable[[str, Any], None]
    deadline: float


class SimReplica:
    """The shell of one replica (what ``PartitionActor`` does with Ray)."""

    def __init__(self, world: World, slot: str, node: Node) -> None:
        self.world = world
        self.slot = slot
        self.node = node
        self.log = MemoryPartition(f"p0/{slot}")
        self.replica = Replica(slot, self.log, lambda: world.now)
        self.peers: dict[str, str] = {}  # follower slot -> node id
        self.links: dict[str, Link] = {}
        self.waiters: list[Waiter] = []
        self.best_hw: dict[int, int] = {}  # epoch -> highest HW seen as its leader
        self.checked_to = 0  # records below this were checked against the history
        self.restarted = False

    # --- roles ---

    def on_role(self, role: str, epoch: int, replicas: dict[str, str], isr: list[str]) -> None:
        if self.restarted and self.replica.role == Role.UNKNOWN:
            self.world.ask_role(self)  # as PartitionActor: ask first, then obey orders
        self.apply_role(role, epoch, replicas, isr)

    def apply_role(self, role: str, epoch: int, replicas: dict[str, str], isr: list[str]) -> None:
        try:
            if role == "leader":
                self.replica.become_leader(epoch, replicas, isr)
                self.peers = {s: n for s, n in replicas.items() if s != self.slot}
                self.links = {s: Link(self._sender(s)) for s in self.peers}
                if epoch == self.world.state.epoch:  # a stale role order leads nothing
                    self.world.check_new_leader(self)
                self.after_hw()
            else:
                self.replica.become_follower(epoch)
                self.links = {}
        except FencedLeaderEpoch:
            return
        self.check_waiters()

    def restart(self) -> None:
        self.log.restart()
        self.checked_to = min(self.checked_to, self.log.high_watermark)
        self.replica = Replica(self.slot, self.log, lambda: self.world.now)
        self.links = {}
        self.waiters = []
        self.restarted = True
        self.world.ask_role(self)

    # --- produce ---

    def on_produce(
        self, values: list[str], pid: int, seq: int, reply: Callable[[str, Any], None]
    ) -> None:
        if self.replica.role != Role.LEADER:
            reply("NotLeader", None)
            return
        if not self.replica.enough_replicas(MIN_INSYNC):
            reply("NotEnoughReplicas", None)
            return
        try:
            base, last, _duplicate = self.log.produce(values, pid, 0, seq)
        except BrokerError as exc:
            reply(type(exc).__name__, None)
            return
        epoch, slot = self.replica.leader_epoch, self.slot

        def answer(kind: str, _body: Any = None) -> None:
            reply(kind, (base, last, epoch, slot) if kind == "ok" else None)

        self.waiters.append(Waiter(last + 1, epoch, answer, self.world.now + ACKS_ALL_TIMEOUT_S))
        self.after_hw()
        self.push_all()

    def check_waiters(self) -> None:
        kept = []
        for waiter in self.waiters:
            if not self.replica.is_leading(waiter.epoch):
                waiter.reply("NotLeader", None)
            elif self.log.high_watermark >= waiter.end:
                if self.replica.enough_replicas(MIN_INSYNC):
                    waiter.reply("ok", None)
                else:
                    waiter.reply("NotEnoughReplicasAfterAppend", None)
            elif self.world.now > waiter.deadline:
                waiter.reply("NotEnoughReplicas", None)
            else:
                kept.append(waiter)
        self.waiters = kept

    def after_hw(self) -> None:
        self.replica.advance_high_watermark()
        self.world.check_hw(self)
        self.check_waiters()

    # --- leader: one request in flight per follower, decided by the shipped FollowerSender ---

    def _sender(self, slot: str) -> FollowerSender:
        return FollowerSender(
            self.replica, slot, self.log.read, len, lambda _moved: self.after_hw(), PUSH_RECORDS
        )

    def push_all(self) -> None:
        for slot in list(self.links):
            self.push(slot)

    def push(self, slot: str, idle: bool = False) -> None:
        if self.replica.role != Role.LEADER or slot not in self.links:
            return
        link = self.links[slot]
        if link.sent_at >= 0 and self.world.now - link.sent_at < REQUEST_TIMEOUT_S:
            return  # one request in flight (a lost one is given up after the timeout)
        request = link.sender.next_request(heartbeat=idle)
        if request is None:
            link.sent_at = -1.0
            return
        self._send(slot, link, request)

    def _send(self, slot: str, link: Link, request: Request) -> None:
        link.attempt += 1
        attempt = link.attempt
        link.sent_at = self.world.now
        target = self.world.replicas_by_node(self.peers[slot])

        def answer(handler: Callable[[str, Any], None], what: str) -> Callable[[str, Any], None]:
            def reply(kind: str, body: Any) -> None:
                assert target is not None
                self.world.send(target.node, self.node.node_id, lambda: handler(kind, body), what)

            return reply

        back = f"{slot}->{self.slot}"
        if isinstance(request, EpochQuery):
            reply = answer(lambda k, b: self.on_epoch_state(slot, attempt, k, b), f"epoch {back}")
            what = f"epoch-query {self.slot}->{slot} e{request.epoch}"

            def deliver() -> None:
                if target is not None:
                    target.on_epoch_query(request.epoch, reply)

        elif isinstance(request, Truncate):
            reply = answer(lambda k, b: self.on_truncated(slot, attempt, k, b), f"cut {back}")
            what = f"truncate {self.slot}->{slot} to {request.offset}"

            def deliver() -> None:
                if target is not None:
                    target.on_truncate(request.epoch, request.offset, request.expected_end, reply)

        else:
            push: Push = request
            reply = answer(lambda k, b: self.on_pushed(slot, attempt, push, k, b), f"push {back}")
            count = len(push.records or [])
            what = f"push {self.slot}->{slot} e{push.epoch} {count} from {push.start}"

            def deliver() -> None:
                if target is not None:
                    target.on_push(
                        push.epoch, push.records or [], push.epochs, push.high_watermark, reply
                    )

        self.world.send(self.node, self.peers[slot], deliver, what)

    def _current(self, slot: str, attempt: int, kind: str) -> Link | None:
        """The link an answer belongs to, unless it is stale or says this leader is fenced."""
        link = self.links.get(slot)
        if link is None or link.attempt != attempt or self.replica.role != Role.LEADER:
            return None
        link.sent_at = -1.0
        if kind == "Fenced":
            link.sender.on_fenced()
            self.links = {}
            self.check_waiters()
            return None
        if kind != "ok":
            link.sender.on_log_moved()  # the follower's log moved: compare epochs again
            return None
        return link

    def on_epoch_state(self, slot: str, attempt: int, kind: str, body: Any) -> None:
        link = self._current(slot, attempt, kind)
        if link is None:
            return
        cut = link.sender.on_epoch_state(*body)
        if cut is None:
            self.push(slot)
        else:
            self._send(slot, link, cut)

    def on_truncated(self, slot: str, attempt: int, kind: str, body: Any) -> None:
        link = self._current(slot, attempt, kind)
        if link is not None:
            link.sender.on_truncated(body)
            self.push(slot)

    def on_pushed(self, slot: str, attempt: int, push: Push, kind: str, body: Any) -> None:
        link = self._current(slot, attempt, kind)
        if link is not None:
            link.sender.on_pushed(push, body)
            self.push(slot)

    # --- follower side ---

    def _accept(self, epoch: int, reply: Callable[[str, Any], None]) -> bool:
        try:
            if self.replica.accept_leader(epoch):
                self.links = {}
                self.check_waiters()
        except FencedLeaderEpoch:
            reply("Fenced", None)
            return False
        return True

    def on_epoch_query(self, epoch: int, reply: Callable[[str, Any], None]) -> None:
        if self._accept(epoch, reply):
            reply("ok", (list(self.log.epochs.entries), self.log.log_end_offset))

    def on_truncate(
        self, epoch: int, target: int, expected_end: int, reply: Callable[[str, Any], None]
    ) -> None:
        if not self._accept(epoch, reply):
            return
        if self.log.log_end_offset != expected_end:
            reply("Invalid", None)  # the log moved since the leader compared epochs
            return
        self.log.truncate_to(min(target, self.log.log_end_offset))
        self.checked_to = min(self.checked_to, self.log.high_watermark)
        reply("ok", self.log.log_end_offset)

    def on_push(
        self,
        epoch: int,
        records: list[SimRecord],
        epochs: list[tuple[int, int]],
        hw: int,
        reply: Callable[[str, Any], None],
    ) -> None:
        if not self._accept(epoch, reply):
            return
        if not self.log.append_replica(records, epochs):
            reply("Invalid", None)
            return
        if self.replica.follower_high_watermark(hw):
            self.world.check_hw(self)
        reply("ok", self.log.log_end_offset)

    # --- timers ---

    def tick(self) -> None:
        if self.replica.role == Role.LEADER:
            for slot in list(self.links):
                self.push(slot, idle=True)
            self.check_waiters()

    def isr_tick(self) -> None:
        proposal = self.replica.isr_proposal(LAG_TIME_MAX_S, REQUEST_TIMEOUT_S)
        if proposal is None:
            return
        epoch = self.replica.leader_epoch
        self.world.send(
            self.node,
            CONTROLLER,
            lambda: self.world.alter_isr(self, epoch, proposal),
            f"alter-isr {self.slot} e{epoch} {sorted(proposal)}",
        )

    def on_isr_refused(self) -> None:
        self.replica.isr_answered()
        self.after_hw()

    def on_isr(self, epoch: int, accepted: list[str]) -> None:
        if self.replica.apply_isr(epoch, accepted):
            self.after_hw()


class Producer:
    """An idempotent producer sending one batch at a time with acks=all, retrying on errors
    and timeouts with the same sequence (a late first attempt becomes a duplicate)."""

    def __init__(self, world: World, pid: int, batches: int) -> None:
        self.world = world
        self.pid = pid
        self.remaining = batches
        self.seq = 0
        self.values: list[str] = []
        self.attempt = 0
        self.acked: list[tuple[int, str, int]] = []  # (offset, value, sequence)

    def next_batch(self) -> None:
        if self.remaining == 0:
            return
        self.remaining -= 1
        count = self.world.rng.randint(1, 3)
        self.values = [f"p{self.pid}-{self.seq + i}" for i in range(count)]
        self.send()

    def send(self) -> None:
        self.attempt += 1
        attempt = self.attempt
        leader = self.world.leader_replica_for_client()
        values, seq = list(self.values), self.seq
        self.world.at(self.world.now + 1.0, lambda: self.timeout(attempt), "producer timeout")
        if leader is None:
            return
        self.world.send_from_client(
            leader.node.node_id,
            lambda: leader.on_produce(
                values,
                self.pid,
                seq,
                lambda k, b: self.world.send(
                    leader.node,
                    CLIENT,
                    lambda: self.on_reply(attempt, k, b),
                    f"produce-reply {k}",
                ),
            ),
            f"produce seq {seq} x{len(values)} -> {leader.slot}",
        )

    def timeout(self, attempt: int) -> None:
        if attempt == self.attempt:
            self.send()

    def on_reply(self, attempt: int, kind: str, body: Any) -> None:
        if attempt != self.attempt:
            return
        if kind != "ok":
            if kind == "OutOfOrderSequence":
                self.world.fail(f"producer got OutOfOrderSequence at seq {self.seq}")
            self.attempt += 1
            retry = self.attempt
            self.world.at(self.world.now + 0.05, lambda: self._retry(retry), "producer backoff")
            return
        base, last, epoch, slot = body
        self.world.check_ack(base, last, self.values, epoch, slot)
        for i, value in enumerate(self.values):
            self.acked.append((base + i, value, self.seq + i))
        self.seq += len(self.values)
        self.attempt += 1
        self.next_batch()

    def _retry(self, attempt: int) -> None:
        if attempt == self.attempt:
            self.send()


class World:
    def __init__(self, seed: int, duration_s: float = 6.0, nodes: int = 4) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self.events: list[_Event] = []
        self.order = 0
        self.trace: list[str] = []
        self.duration_s = duration_s
        self.drop_p = self.rng.choice([0.0, 0.01, 0.05, 0.1])
        self.dup_p = self.rng.choice([0.0, 0.01, 0.05])
        self.long_delay_p = self.rng.choice([0.0, 0.01, 0.05])
        self.cut: set[frozenset[str]] = set()  # node pairs that cannot talk
        self.nodes = {f"n{i}": Node(f"n{i}") for i in range(nodes)}
        first = sorted(self.nodes)[:REPLICATION_FACTOR]
        self.state = PartitionState.placed(first)
        self.replicas: dict[str, SimReplica] = {
            slot: SimReplica(self, slot, self.nodes[node])
            for slot, node in self.state.nodes.items()
        }
        self.history: list[tuple[str, int, int]] = []  # committed (value, pid, sequence)
        self.acks_by_epoch: dict[int, str] = {}
        self.producers = [
            Producer(self, pid=7, batches=10_000),
            Producer(self, pid=8, batches=10_000),
        ]
        self.unanswered_since: float | None = None
        self.faults = 0

    # --- scheduling ---

    def at(self, time: float, action: Callable[[], None], what: str) -> None:
        self.order += 1
        heapq.heappush(self.events, _Event(time, self.order, action, what))

    def run(self) -> World:
        for slot in self.replicas:
            self.push_role(slot)
        for producer in self.producers:
            self.at(0.01, producer.next_batch, f"producer {producer.pid} start")
        self.at(CONTROLLER_CHECK_S, self.controller_check, "controller check")
        self.at(0.01, self.ticks, "ticks")
        self.at(ISR_CHECK_S, self.isr_ticks, "isr ticks")
        self.schedule_faults()
        while self.events and self.now < self.duration_s:
            event = heapq.heappop(self.events)
            self.now = event.time
            self.trace.append(f"{self.now:8.4f} {event.what}")
            event.action()
        self.check_final()
        return self

    def fail(self, message: str) -> None:
        raise InvariantBroken(self.seed, message, self.trace)

    # --- network ---

    def _deliver_to(self, node_id: str, action: Callable[[], None], incarnation: int) -> None:
        if node_id in (CONTROLLER, CLIENT):
            action()
            return
        node = self.nodes[node_id]
        if not node.up or node.removed or node.incarnation != incarnation:
            return  # the process that was sent to is gone
        if node.frozen_until > self.now:
            node.held.append(action)
            return
        action()

    def send(self, src: Node | str, dst: str, action: Callable[[], None], what: str) -> None:
        src_id = src if isinstance(src, str) else src.node_id
        if frozenset((src_id, dst)) in self.cut or self.rng.random() < self.drop_p:
            self.trace.append(f"{self.now:8.4f}   dropped: {what}")
            return
        incarnation = self.nodes[dst].incarnation if dst in self.nodes else 0
        copies = 2 if self.rng.random() < self.dup_p else 1
        for _ in range(copies):
            delay = self.rng.uniform(0.0005, 0.01)
            if self.rng.random() < self.long_delay_p:
                delay += self.rng.uniform(0.1, 0.8)
            self.at(
                self.now + delay,
                lambda: self._deliver_to(dst, action, incarnation),
                f"deliver {what}",
            )

    def send_from_client(self, dst: str, action: Callable[[], None], what: str) -> None:
        self.send(CLIENT, dst, action, what)

    def replicas_by_node(self, node_id: str) -> SimReplica | None:
        for replica in self.replicas.values():
            if replica.node.node_id == node_id:
                return replica
        return None

    # --- timers ---

    def _runnable(self, replica: SimReplica) -> bool:
        node = replica.node
        return node.up and not node.removed and node.frozen_until <= self.now

    def ticks(self) -> None:
        for replica in list(self.replicas.values()):
            if self._runnable(replica):
                replica.tick()
        self.at(self.now + IDLE_PUSH_S, self.ticks, "ticks")

    def isr_ticks(self) -> None:
        for replica in list(self.replicas.values()):
            if self._runnable(replica):
                replica.isr_tick()
        self.at(self.now + ISR_CHECK_S, self.isr_ticks, "isr ticks")

    # --- the Controller ---

    def leader_replica_for_client(self) -> SimReplica | None:
        return self.replicas.get(self.state.leader) if self.state.leader else None

    def push_role(self, slot: str) -> None:
        state = self.state
        replica = self.replicas.get(slot)
        if replica is None:
            return
        role = "leader" if slot == state.leader else "follower"
        epoch, isr = state.epoch, list(state.isr)
        peers = {s: state.nodes[s] for s in state.replicas}
        self.send(
            CONTROLLER,
            replica.node.node_id,
            lambda: replica.on_role(role, epoch, peers, isr),
            f"role {slot}={role} e{epoch} isr={isr}",
        )

    def ask_role(self, replica: SimReplica) -> None:
        """A restarted replica asks what it is; a restarted leader leads a new epoch, so its
        high watermark (relearned from its followers) never moves back within an epoch."""
        if replica.slot not in self.state.replicas:
            return
        if replica.slot == self.state.leader:
            self.state.epoch += 1
            self.check_new_leader(replica)
            for slot in self.state.replicas:
                if slot != replica.slot:
                    self.push_role(slot)
        state = self.state
        replica.apply_role(
            "leader" if replica.slot == state.leader else "follower",
            state.epoch,
            {s: state.nodes[s] for s in state.replicas},
            list(state.isr),
        )

    def alter_isr(self, replica: SimReplica, epoch: int, isr: set[str]) -> None:
        try:
            self.state.alter_isr(epoch, isr)
        except FencedLeaderEpoch:
            self.send(CONTROLLER, replica.node.node_id, replica.on_isr_refused, "isr-refused")
            return
        accepted = list(self.state.isr)
        self.send(
            CONTROLLER,
            replica.node.node_id,
            lambda: replica.on_isr(epoch, accepted),
            f"isr-accepted e{epoch} {accepted}",
        )

    def controller_check(self) -> None:
        alive = {n for n, node in self.nodes.items() if not node.removed}
        leader = self.replicas.get(self.state.leader) if self.state.leader else None
        hung = False
        if leader is not None and (
            not self._runnable(leader) or frozenset((CONTROLLER, leader.node.node_id)) in self.cut
        ):
            self.unanswered_since = self.unanswered_since or self.now
            hung = self.now - self.unanswered_since >= LEADER_PROBE_TIMEOUT_S
        else:
            self.unanswered_since = None
        used = set(self.state.nodes.values())

        def choose(count: int, exclude: set[str]) -> list[str]:
            return [n for n in sorted(alive) if n not in exclude and n not in used][:count]

        plan = plan_partition(
            self.state,
            alive,
            replication_factor=REPLICATION_FACTOR,
            unclean=False,
            choose_nodes=choose,
            leader_hung=hung,
            prefer=self.rng.random() < 0.1,
        )
        for slot in plan.removed:
            self.replicas.pop(slot, None)
        for slot in plan.added:
            self.replicas[slot] = SimReplica(self, slot, self.nodes[self.state.nodes[slot]])
        if plan.changed:
            self.unanswered_since = None
            if self.state.leader is not None and self.state.leader != (leader and leader.slot):
                self.check_new_leader(self.replicas[self.state.leader])
            for slot in self.state.replicas:
                self.push_role(slot)
        self.at(self.now + CONTROLLER_CHECK_S, self.controller_check, "controller check")

    # --- faults ---

    def schedule_faults(self) -> None:
        t = 0.3
        while t < self.duration_s - 1.5:
            t += self.rng.uniform(0.2, 1.2)
            kind = self.rng.choice(["crash", "freeze", "partition", "remove", "none"])
            self.at(t, lambda k=kind: self.inject(k), f"fault {kind}")

    def inject(self, kind: str) -> None:
        candidates = [n for n in self.nodes.values() if not n.removed and n.up]
        if not candidates or kind == "none":
            return
        node = self.rng.choice(candidates)
        self.faults += 1
        if kind == "crash":
            node.up = False
            node.incarnation += 1
            node.held = []
            down_s = self.rng.uniform(0.05, 1.5)
            self.at(self.now + down_s, lambda: self.restart(node), f"restart {node.node_id}")
        elif kind == "freeze":
            until = self.now + self.rng.uniform(0.2, 3.0)
            node.frozen_until = until
            self.at(until, lambda: self.thaw(node), f"thaw {node.node_id}")
        elif kind == "partition":
            others = [n for n in self.nodes if n != node.node_id] + [CONTROLLER, CLIENT]
            pairs = {frozenset((node.node_id, o)) for o in others if self.rng.random() < 0.7}
            self.cut |= pairs
            heal_s = self.rng.uniform(0.2, 2.0)
            self.at(self.now + heal_s, lambda: self.cut.difference_update(pairs), "heal")
        elif kind == "remove":
            spare = [n for n in self.nodes.values() if not n.removed]
            if len(spare) <= REPLICATION_FACTOR:
                return  # keep enough nodes for a full replica set
            node.removed = True
            node.up = False

    def restart(self, node: Node) -> None:
        if node.removed:
            return
        node.up = True
        replica = self.replicas_by_node(node.node_id)
        if replica is not None:
            replica.restart()

    def thaw(self, node: Node) -> None:
        if node.frozen_until > self.now:
            return
        held, node.held = node.held, []
        for action in held:
            if node.up and not node.removed:
                action()

    # --- invariants ---

    def check_hw(self, replica: SimReplica) -> None:
        """Everything below the replica's HW matches the committed history (extending it)."""
        log = replica.log
        hw = log.high_watermark
        epoch = replica.replica.leader_epoch
        if replica.replica.role == Role.LEADER:
            best = replica.best_hw.get(epoch, -1)
            if hw < best:
                self.fail(f"{replica.slot}: HW moved back in epoch {epoch}: {best} -> {hw}")
            replica.best_hw[epoch] = hw
        start = max(log.log_start_offset, min(replica.checked_to, hw))
        for record in log.read(start, hw - start):
            entry = (record.value, record.producer_id, record.sequence)
            if record.offset < len(self.history):
                if self.history[record.offset] != entry:
                    self.fail(
                        f"{replica.slot} disagrees below its HW {hw} at offset {record.offset}: "
                        f"{entry} vs committed {self.history[record.offset]}"
                    )
            elif record.offset == len(self.history):
                if replica.replica.role != Role.LEADER:
                    self.fail(f"{replica.slot} (a follower) committed offset {record.offset}")
                self.check_sequence(entry)
                self.history.append(entry)
        replica.checked_to = hw

    def check_sequence(self, entry: tuple[str, int, int]) -> None:
        _, pid, seq = entry
        last = next((s for _, p, s in reversed(self.history) if p == pid), -1)
        if seq != last + 1:
            self.fail(f"producer {pid}: sequence {seq} committed after {last} (dup/reorder)")

    def check_new_leader(self, replica: SimReplica) -> None:
        """A new leader must hold every committed record (no acknowledged record is lost)."""
        log = replica.log
        if log.log_end_offset < len(self.history):
            self.fail(
                f"{replica.slot} leads epoch {replica.replica.leader_epoch} with log end "
                f"{log.log_end_offset} < committed {len(self.history)}: committed records lost"
            )
        for record in log.read(log.log_start_offset, len(self.history)):
            entry = (record.value, record.producer_id, record.sequence)
            if self.history[record.offset] != entry:
                self.fail(f"new leader {replica.slot} differs at committed offset {record.offset}")
        replica.checked_to = min(len(self.history), log.high_watermark)

    def check_ack(self, base: int, last: int, values: list[str], epoch: int, slot: str) -> None:
        other = self.acks_by_epoch.setdefault(epoch, slot)
        if other != slot:
            self.fail(f"two leaders acknowledged writes in epoch {epoch}: {other} and {slot}")
        for offset, value in zip(range(base, last + 1), values, strict=True):
            if offset >= len(self.history) or self.history[offset][0] != value:
                self.fail(f"ack of {value!r} at {offset} is not the committed record there")

    def check_final(self) -> None:
        acked = [a for producer in self.producers for a in producer.acked]
        for offset, value, _ in acked:
            if offset >= len(self.history) or self.history[offset][0] != value:
                self.fail(f"acknowledged {value!r} at {offset} is not committed")
