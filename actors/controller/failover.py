"""The failover planner: what the Controller changes about one partition after a cluster check.

A plain function over ``PartitionState`` (no Ray, no clock), so every rule — elect only from the
in-sync replicas, fail over a hung leader only when another in-sync replica can take over,
replace replicas lost with their node, move leadership back to the preferred replica — is unit
tested and driven by the deterministic simulator. The Controller applies the plan: it kills the
actors of removed slots, persists the state and pushes the new roles.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from ray_broker.actors.controller.partition_state import PartitionState

ChooseNodes = Callable[[int, set[str]], list[str]]


@dataclass
class PartitionPlan:
    """What changed: slots removed with their dead nodes, slots added, and whether the state
    (leader, epoch, ISR or replicas) changed at all and must be persisted and pushed."""

    removed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    changed: bool = False


def plan_partition(
    state: PartitionState,
    alive_nodes: Collection[str],
    *,
    replication_factor: int,
    unclean: bool,
    choose_nodes: ChooseNodes,
    leader_hung: bool = False,
    prefer: bool = False,
) -> PartitionPlan:
    """Update ``state`` for the live nodes; returns what changed.

    ``choose_nodes(count, exclude)`` picks nodes for replacement replicas (least loaded first).
    """
    plan = PartitionPlan()
    alive_nodes = set(alive_nodes)
    for slot in [s for s in state.replicas if state.nodes[s] not in alive_nodes]:
        state.remove_slot(slot)
        plan.removed.append(slot)
        plan.changed = True
    alive_slots = {s for s in state.replicas if state.nodes[s] in alive_nodes}
    standby = [s for s in state.isr if s != state.leader and s in alive_slots]
    if leader_hung and state.leader is not None and standby:
        # Only with another in-sync replica to take over: otherwise waiting for the leader to
        # answer again loses nothing, failing over would.
        state.isr = [s for s in state.isr if s != state.leader]
        alive_slots.discard(state.leader)
        plan.changed |= state.elect(alive_slots, unclean)
    elif state.leader is None or state.leader not in alive_slots:
        plan.changed |= state.elect(alive_slots, unclean)
    missing = replication_factor - len(state.replicas)
    if missing > 0:
        for node in choose_nodes(missing, set(state.nodes.values())):
            slot = state.add_slot(node)
            plan.added.append(slot)
            plan.changed = True
            if state.leader is None and replication_factor == 1:
                # One replica: its data can only be where the directory is; start it on a live
                # node (whole-cluster restart on a shared disk).
                state.leader = slot
                state.isr = [slot]
                state.epoch += 1
    elif prefer and state.prefer(alive_slots):
        plan.changed = True
    return plan
