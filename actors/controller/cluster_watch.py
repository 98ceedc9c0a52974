"""The Controller's watch over the cluster: every check interval it probes replicas, fails over
partitions whose leader is gone or hung (``failover.py``'s plan), replaces replicas lost with
their node, starts again those whose actor died (``liveness.py`` decides which), and moves
leadership back to preferred replicas. Leaders report ISR changes here (``alter_isr``) and a
restarted replica asks for its role (``replica_state``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any

from ray.exceptions import ActorDiedError, ActorUnschedulableError

from ray_broker._ray import submit
from ray_broker.actors.controller.failover import plan_partition
from ray_broker.actors.controller.liveness import Answer, PartitionKey, ReplicaKey
from ray_broker.actors.controller.shell import (
    PREFERRED_LEADER_EVERY_ROUNDS,
    PROBE_ALL_EVERY_ROUNDS,
    TRANSACTIONS_NUDGE_EVERY_ROUNDS,
    ControllerShell,
)
from ray_broker.actors.controller.topic_registry import TopicRecord
from ray_broker.errors import (
    BrokerError,
    UnknownTopicOrPartition,
)

logger = logging.getLogger(__name__)


def _answer(answer: object) -> Answer:
    if isinstance(answer, (ActorDiedError, ActorUnschedulableError)):
        return Answer.DEAD
    return Answer.SILENT if isinstance(answer, BaseException) else Answer.UP


class ClusterWatch(ControllerShell):
    async def _watch_cluster(self) -> None:
        """Every check interval: fail over partitions whose leader's node died, replace replicas
        on dead nodes, and move leadership back to preferred replicas."""
        rounds = 0
        while True:
            await asyncio.sleep(self.config.controller_check_interval_ms / 1000)
            rounds += 1
            try:
                await self._refresh_nodes()
                hung, dead = await self._probe_replicas(
                    everyone=rounds % PROBE_ALL_EVERY_ROUNDS == 0
                )
                async with self._mutex():
                    pushes = await self._heal(
                        prefer=rounds % PREFERRED_LEADER_EVERY_ROUNDS == 0, hung=hung
                    )
                    pushes += [p for p in self._restart_dead(dead) if p not in pushes]
                await self._push_many(pushes)
                if rounds % TRANSACTIONS_NUDGE_EVERY_ROUNDS == 0:
                    self._nudge_transaction_coordinator()
            except Exception:  # keep watching; the next round retries
                logger.exception("cluster check failed")

    async def _probe_replicas(
        self, everyone: bool = True
    ) -> tuple[set[PartitionKey], set[ReplicaKey]]:
        """Ask replicas whether they are up; returns the hung leaders and the replicas to start
        again (``Liveness`` decides from the answers over time).

        Leaders of replicated partitions are probed every round (their failover waits on it);
        the rest only when ``everyone``: each probe is a Ray call that costs the idle replica
        and the Controller CPU, and a lone replica or a follower loses nothing by being found
        dead a second later."""
        leaders = {
            (record.topic_id, p): state.leader
            for record in self.registry.topics.values()
            if record.replication_factor > 1  # nobody to fail over to otherwise
            for p, state in enumerate(record.states)
        }
        probes = {}
        for (topic_id, p, slot), handle in list(self._actors.items()):
            if not everyone and leaders.get((topic_id, p)) != slot:
                continue
            try:
                probes[(topic_id, p, slot)] = submit(handle.ready, session=self._token)
            except BrokerError:
                continue  # cannot even submit (its node is leaving): the next round sees it
        timeout = self.config.controller_check_interval_ms / 1000
        answers = await asyncio.gather(
            *(asyncio.wait_for(ref, timeout) for ref in probes.values()), return_exceptions=True
        )
        verdicts = {key: _answer(answer) for key, answer in zip(probes, answers, strict=True)}
        now = asyncio.get_running_loop().time()
        return self._liveness.judge(verdicts, leaders, self._actors, now)

    def _restart_dead(self, dead: set[tuple[str, int, str]]) -> list[tuple[TopicRecord, int]]:
        """Start replicas again whose actor is gone while their node lives (caller holds the
        mutex); those on dead nodes, and leaders of replicated partitions, are the failover
        plan's to handle."""
        records = {record.topic_id: record for record in self.registry.topics.values()}
        alive_nodes = set(self._alive_nodes())
        pushes = []
        for topic_id, p, slot in sorted(dead):
            handle = self._actors.pop((topic_id, p, slot), None)
            record = records.get(topic_id)
            if record is None or p >= len(record.states):
                continue
            state = record.states[p]
            if (
                slot not in state.replicas
                # A leader with others to take over is the failover's (probed, elected, fenced);
                # a lone replica can only come back where its data is.
                or (slot == state.leader and record.replication_factor > 1)
                or state.nodes.get(slot) not in alive_nodes
            ):
                continue
            logger.warning("%s-%d: replica %s is gone; starting it again", record.name, p, slot)
            if handle is not None:
                self._kill(handle, f"{record.name}-{p} replica {slot}")
            self._actor(record, p, slot)
            pushes.append((record, p))
        return pushes

    async def _heal(
        self, prefer: bool, hung: Collection[tuple[str, int]] = frozenset()
    ) -> list[tuple[TopicRecord, int]]:
        """Apply the failover plan to every partition (caller holds the mutex); returns the
        partitions whose roles must be pushed — after the mutex is released, so metadata
        requests never wait behind role changes of many partitions."""
        alive_nodes = set(self._alive_nodes())
        pushes = []
        offline = 0
        for record in list(self.registry.topics.values()):
            for p, state in enumerate(record.states):
                leader_before = (state.leader, state.epoch)
                plan = plan_partition(
                    state,
                    alive_nodes,
                    replication_factor=record.replication_factor,
                    unclean=record.config.unclean_leader_election_enable,
                    choose_nodes=self._choose_nodes,
                    leader_hung=(record.topic_id, p) in hung,
                    prefer=prefer,
                )
                for slot in plan.removed:
                    logger.warning("%s-%d: replica %s lost with its node", record.name, p, slot)
                    handle = self._actors.pop((record.topic_id, p, slot), None)
                    if handle is not None:
                        self._kill(handle, f"{record.name}-{p} replica {slot}")
                if plan.changed:
                    self.registry.save(record)
                    for slot in state.replicas:
                        self._actor(record, p, slot)
                    pushes.append((record, p))
                    if state.leader is not None and (state.leader, state.epoch) != leader_before:
                        self._metrics.elected(record.name)
                offline += state.leader is None
        self._metrics.offline_partitions(offline)
        return pushes

    async def replica_state(
        self, topic: str, partition: int, slot: str, restarted: bool = False, *, session: str = ""
    ) -> dict[str, Any] | None:
        """A (re)started replica asks what it is. None if it is no longer a replica.

        A *restarted* leader leads a new epoch: its high watermark is relearned from its
        followers and must not move back within the epoch consumers already read.
        """
        await self._internal(session, "replica_state")
        record = self.registry.topics.get(topic)
        if record is None or partition >= len(record.states):
            return None
        state = record.states[partition]
        if slot not in state.replicas:
            return None
        if restarted and slot == state.leader:
            async with self._mutex():
                state.epoch += 1
                self.registry.save(record)
            logger.warning(
                "%s-%d: leader %s restarted; epoch %d", topic, partition, slot, state.epoch
            )
            # The others learn the epoch in the background: this caller waits for the answer.
            asyncio.get_running_loop().create_task(self._push_roles(record, partition))
        alive = set(self._alive_nodes())
        replicas = {
            s: self._actor(record, partition, s)
            for s in state.replicas
            if state.nodes.get(s) in alive
        }
        role = "leader" if slot == state.leader else "follower"
        return {"role": role, "epoch": state.epoch, "replicas": replicas, "isr": state.isr}

    async def alter_isr(
        self, topic: str, partition: int, epoch: int, isr: list[str], *, session: str = ""
    ) -> list[str]:
        """The leader of ``epoch`` reports a new in-sync set; recorded if it is still leader.

        Raises:
            FencedLeaderEpoch: the caller is not the current leader.
            UnknownTopicOrPartition: no such partition.
        """
        await self._internal(session, "alter_isr")
        async with self._mutex():
            record = self.registry.topics.get(topic)
            if record is None or partition >= len(record.states):
                raise UnknownTopicOrPartition(f"{topic}-{partition} does not exist")
            state = record.states[partition]
            if state.alter_isr(epoch, isr):
                self.registry.save(record)
            return state.isr
