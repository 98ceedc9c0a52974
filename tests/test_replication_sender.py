"""``FollowerSender``'s decisions without Ray: epochs compared before the first push, the cut a
diverged follower gets, capped pushes, Kafka's caught-up rule, heartbeats and fencing. The
seeded simulator (tests/sim) drives the same class under faults."""

from __future__ import annotations

from ray_broker.actors.partition.replica import Replica, Role
from ray_broker.actors.partition.replication import EpochQuery, FollowerSender, Push, Truncate
from tests.sim.memory_partition import MemoryPartition


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sender_for(records: int, batch: int = 10) -> tuple[FollowerSender, Replica, Clock, list[bool]]:
    clock = Clock()
    log = MemoryPartition("p")
    replica = Replica("r0", log, clock)
    replica.become_leader(1, ["r0", "r1"], ["r0", "r1"])
    log.produce([f"v{i}" for i in range(records)], 1, 0, 0)
    moved: list[bool] = []
    return FollowerSender(replica, "r1", log.read, len, moved.append, batch), replica, clock, moved


def test_epochs_are_compared_before_the_first_push_and_after_a_failure() -> None:
    sender, _, _, _ = sender_for(5)
    assert sender.next_request() == EpochQuery(1)
    assert sender.on_epoch_state([(1, 0)], 0) is None  # a fresh follower continues
    assert isinstance(sender.next_request(), Push)
    sender.on_log_moved()
    assert sender.next_request() == EpochQuery(1)


def test_a_diverged_follower_is_cut_where_the_common_epoch_ends() -> None:
    sender, replica, _, _ = sender_for(5)
    sender.next_request()
    # The follower wrote 8 records in epoch 0 that this leader (epoch 1 from offset 0) never had.
    cut = sender.on_epoch_state([(0, 0)], 8)
    assert cut == Truncate(1, 0, 0, 8)
    assert not sender.synced
    sender.on_truncated(0)
    assert sender.synced and replica.followers["r1"].log_end_offset == 0


def test_capped_pushes_count_as_caught_up_only_at_the_leaders_end() -> None:
    sender, replica, clock, moved = sender_for(25, batch=10)
    sender.next_request()
    sender.on_epoch_state([], 0)
    clock.now = 5.0
    first = sender.next_request()
    assert isinstance(first, Push) and len(first.records) == 10 and first.leader_end == 25
    sender.on_pushed(first, 10)
    assert replica.followers["r1"].caught_up_at == 0.0  # 10 of 25: not caught up
    for start, end in ((10, 20), (20, 25)):
        push = sender.next_request()
        assert push is not None and push.start == start
        sender.on_pushed(push, end)
    assert replica.followers["r1"].caught_up_at == 5.0
    assert replica.log.high_watermark == 25 and moved[-1] is True


def test_a_caught_up_follower_gets_heartbeats_only_when_asked() -> None:
    sender, _, _, _ = sender_for(0)
    sender.next_request()
    sender.on_epoch_state([], 0)
    assert sender.next_request() is None
    beat = sender.next_request(heartbeat=True)
    assert isinstance(beat, Push) and beat.records is None and beat.high_watermark == 0


def test_a_fenced_sender_steps_the_leader_down_and_goes_quiet() -> None:
    sender, replica, _, _ = sender_for(3)
    assert sender.on_fenced() is True
    assert replica.role == Role.FOLLOWER and replica.leader_epoch == 2
    assert not sender.active and sender.next_request() is None
    sender.on_pushed(Push(1, 0, None, [], 0, 3), 3)  # a late answer changes nothing
    assert replica.followers == {}
