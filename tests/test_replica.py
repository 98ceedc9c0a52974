"""``Replica``'s rules without Ray: roles and fencing, KIP-279 truncation points, the high
watermark over the (pending) ISR, ISR shrink and expand, acks=all's replica count."""

from __future__ import annotations

import pytest

from ray_broker.actors.partition.replica import Replica, Role
from ray_broker.errors import FencedLeaderEpoch, NotLeader
from tests.sim.memory_partition import MemoryPartition


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def leader_with(records: int, clock: Clock, epoch: int = 1) -> Replica:
    log = MemoryPartition("p")
    replica = Replica("r0", log, clock)
    replica.become_leader(epoch, ["r0", "r1", "r2"], ["r0", "r1", "r2"])
    log.produce([f"v{i}" for i in range(records)], 1, 0, 0)
    return replica


def test_older_epochs_are_fenced_and_newer_leaders_demote() -> None:
    replica = leader_with(0, Clock(), epoch=3)
    with pytest.raises(FencedLeaderEpoch):
        replica.accept_leader(2)
    with pytest.raises(FencedLeaderEpoch):
        replica.accept_leader(3)  # two leaders cannot share an epoch
    assert replica.accept_leader(4) is True
    assert replica.role == Role.FOLLOWER and replica.leader_epoch == 4
    with pytest.raises(NotLeader):
        replica.check_leader()
    with pytest.raises(FencedLeaderEpoch):
        replica.become_leader(3, ["r0"], ["r0"])


def test_high_watermark_is_the_lowest_isr_log_end_and_never_moves_back() -> None:
    clock = Clock()
    replica = leader_with(10, clock)
    assert replica.log.high_watermark == 0
    replica.on_follower_progress("r1", 10, 10)
    assert replica.log.high_watermark == 0  # r2 has not answered
    replica.on_follower_progress("r2", 6, 10)
    assert replica.log.high_watermark == 6
    replica.on_follower_progress("r2", 4, 10)  # a stale, lower report
    assert replica.log.high_watermark == 6


def test_a_lagging_follower_leaves_the_isr_and_rejoins_when_caught_up() -> None:
    clock = Clock()
    replica = leader_with(10, clock)
    replica.on_follower_progress("r1", 10, 10)
    clock.now = 31.0
    replica.mark_caught_up("r1")
    assert replica.isr_proposal(30.0, 5.0) == {"r0", "r1"}
    assert replica.isr_proposal(30.0, 5.0) is None  # one proposal at a time
    assert replica.apply_isr(1, ["r0", "r1"])
    assert replica.log.high_watermark == 10
    replica.on_follower_progress("r2", 10, 10)
    assert replica.isr_proposal(30.0, 5.0) == {"r0", "r1", "r2"}


def test_pending_isr_expansion_holds_the_high_watermark_back() -> None:
    """Found by the simulator (seed 2882): while the Controller records r2 joining, the HW must
    not pass r2, or r2 joins the ISR without a committed record."""
    clock = Clock()
    replica = leader_with(10, clock)
    assert replica.apply_isr(1, ["r0", "r1"])
    replica.on_follower_progress("r1", 10, 10)
    assert replica.log.high_watermark == 10
    replica.log.produce(["x"], 1, 0, 10)
    replica.on_follower_progress("r2", 10, 11)  # r2 has reached the HW: may join
    assert replica.isr_proposal(30.0, 5.0) == {"r0", "r1", "r2"}
    replica.on_follower_progress("r1", 11, 11)
    assert replica.log.high_watermark == 10  # r2 (pending) has not got offset 10 yet
    replica.isr_answered()  # refused: the HW follows the current ISR again
    replica.advance_high_watermark()
    assert replica.log.high_watermark == 11


def test_truncation_uses_the_newest_common_epoch_kip_279() -> None:
    """Found by the simulator (seed 2537): a deposed leader wrote offsets 223-224 in epoch 1,
    which the new leader (epoch 2) never saw; it holds epoch-0 records there."""
    clock = Clock()
    log = MemoryPartition("p")
    leader = Replica("r2", log, clock)
    log.epochs.assign(0, 0)
    log.produce([f"v{i}" for i in range(225)], 1, 0, 0)  # epoch 0 records up to 224
    leader.become_leader(2, ["r1", "r2"], ["r2"])  # epochs: (0, 0), (2, 225)
    follower_epochs = [(0, 0), (1, 223)]
    assert leader.truncation_point(follower_epochs, 225) == 223
    assert leader.truncation_point([(0, 0)], 225) is None  # same history: keep going
    assert leader.truncation_point([(0, 0)], 300) == 225  # longer than the leader: cut


def test_acks_all_needs_min_insync_replicas() -> None:
    replica = leader_with(1, Clock())
    assert replica.enough_replicas(3)
    replica.apply_isr(1, ["r0"])
    assert not replica.enough_replicas(2)


def test_the_real_partition_serves_as_the_replica_log(tmp_path) -> None:
    """``Partition`` (disk, Arrow) is what the actor gives ``Replica``: every attribute the
    protocol reads must exist on it, not only on the simulator's in-memory log."""
    import pyarrow as pa

    from ray_broker.actors.partition.core import Partition
    from ray_broker.config import TopicConfig

    partition = Partition("t", 0, tmp_path, TopicConfig())
    replica = Replica("r0", partition, Clock())
    replica.become_leader(1, ["r0", "r1"], ["r0", "r1"])
    partition.produce(pa.table({"value": pa.array([b"a", b"b"], pa.binary())}))
    assert replica.truncation_point([(0, 0)], 5) == 0  # no shared epoch: cut everything
    assert replica.truncation_point([(1, 0)], 2) is None
    assert replica.on_follower_progress("r1", 2, 2) and partition.high_watermark == 2
    partition.log.close()
