"""The failover planner's rules without Ray (``actors/controller/failover.py``)."""

from __future__ import annotations

from ray_broker.actors.controller.failover import plan_partition
from ray_broker.actors.controller.partition_state import PartitionState


def choose_from(nodes: list[str]):
    return lambda count, exclude: [n for n in nodes if n not in exclude][:count]


def replan(state: PartitionState, alive: set[str], **options):
    """plan_partition for two replicas on nodes a/b, clean elections, no spare nodes."""
    return plan_partition(
        state,
        alive,
        replication_factor=options.pop("replication_factor", 2),
        unclean=options.pop("unclean", False),
        choose_nodes=options.pop("choose_nodes", choose_from([])),
        **options,
    )


def test_dead_leader_is_replaced_by_an_in_sync_replica_and_a_new_slot() -> None:
    state = PartitionState.placed(["a", "b", "c"])
    plan = plan_partition(
        state, {"b", "c", "d"}, replication_factor=3, unclean=False, choose_nodes=choose_from(["d"])
    )
    assert plan.removed == ["r0"] and plan.added == ["r3"] and plan.changed
    assert state.leader == "r1" and state.epoch == 1
    assert state.nodes["r3"] == "d" and "r3" not in state.isr  # it must catch up first


def test_no_in_sync_replica_alive_leaves_the_partition_offline_unless_unclean() -> None:
    state = PartitionState.placed(["a", "b"])
    state.isr = ["r0"]
    plan = plan_partition(
        state, {"b"}, replication_factor=2, unclean=False, choose_nodes=choose_from([])
    )
    assert state.leader is None and plan.changed
    plan = plan_partition(
        state, {"b"}, replication_factor=2, unclean=True, choose_nodes=choose_from([])
    )
    assert state.leader == "r1" and state.isr == ["r1"]


def test_hung_leader_fails_over_only_with_a_standby() -> None:
    state = PartitionState.placed(["a", "b"])
    state.isr = ["r0"]
    plan = replan(state, {"a", "b"}, leader_hung=True)
    assert not plan.changed and state.leader == "r0"  # waiting loses nothing
    state.isr = ["r0", "r1"]
    plan = replan(state, {"a", "b"}, leader_hung=True)
    assert plan.changed and state.leader == "r1" and state.isr == ["r1"]


def test_preferred_leader_returns_when_in_sync() -> None:
    state = PartitionState.placed(["a", "b"])
    state.leader, state.epoch = "r1", 1
    plan = replan(state, {"a", "b"}, prefer=True)
    assert plan.changed and state.leader == "r0" and state.epoch == 2
