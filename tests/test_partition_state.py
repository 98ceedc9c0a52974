"""Leader election rules of the Controller (no Ray)."""

from __future__ import annotations

from ray_broker.actors.controller.partition_state import PartitionState


def test_election_prefers_in_sync_replicas_in_preferred_order_and_bumps_the_epoch():
    state = PartitionState.placed(["n1", "n2", "n3"])
    state.isr = ["r0", "r2"]
    assert state.elect({"r1", "r2"}, unclean=False)  # r0 is dead, r1 is out of sync
    assert (state.leader, state.epoch) == ("r2", 1)
    assert not state.elect({"r1", "r2"}, unclean=False)  # same leader: no new epoch
    assert state.epoch == 1


def test_no_in_sync_replica_means_offline_not_data_loss_unless_unclean():
    state = PartitionState.placed(["n1", "n2"])
    state.isr = ["r0"]
    assert state.elect({"r1"}, unclean=False)
    assert state.leader is None and state.epoch == 1
    assert not state.elect({"r1"}, unclean=False)  # staying offline does not churn epochs
    assert state.epoch == 1
    assert state.elect({"r1"}, unclean=True)
    assert (state.leader, state.isr) == ("r1", ["r1"])


def test_preferred_leader_returns_once_in_sync():
    state = PartitionState.placed(["n1", "n2"])
    state.elect({"r1"}, unclean=False)
    state.isr = ["r1"]
    assert not state.prefer({"r0", "r1"})  # r0 is not in sync yet
    state.isr = ["r1", "r0"]
    assert state.prefer({"r0", "r1"})
    assert state.leader == "r0" and state.epoch == 2
