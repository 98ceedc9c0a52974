"""``Liveness``: which replicas the Controller treats as hung or gone, driven with a fake clock."""

from __future__ import annotations

from ray_broker.actors.controller.liveness import Answer, Liveness

LEADER = ("t", 0, "r0")
FOLLOWER = ("t", 0, "r1")
LEADERS = {("t", 0): "r0"}
KNOWN = {LEADER, FOLLOWER}


def test_a_leader_is_hung_after_the_probe_timeout_and_judged_afresh_after() -> None:
    liveness = Liveness(leader_timeout_s=2.0, silent_restart_s=30.0)
    assert liveness.judge({LEADER: Answer.SILENT}, LEADERS, KNOWN, 0.0) == (set(), set())
    assert liveness.judge({LEADER: Answer.SILENT}, LEADERS, KNOWN, 1.9) == (set(), set())
    hung, gone = liveness.judge({LEADER: Answer.SILENT}, LEADERS, KNOWN, 2.0)
    assert hung == {("t", 0)} and gone == set()
    # Counted again from the next miss: one answer in between resets the count.
    liveness.judge({LEADER: Answer.SILENT}, LEADERS, KNOWN, 3.0)
    liveness.judge({LEADER: Answer.UP}, LEADERS, KNOWN, 4.0)
    assert liveness.judge({LEADER: Answer.SILENT}, LEADERS, KNOWN, 5.5) == (set(), set())


def test_a_dead_replica_is_gone_at_once_and_a_silent_follower_only_after_its_grace() -> None:
    liveness = Liveness(leader_timeout_s=2.0, silent_restart_s=30.0)
    assert liveness.judge({FOLLOWER: Answer.DEAD}, LEADERS, KNOWN, 0.0)[1] == {FOLLOWER}
    assert liveness.judge({FOLLOWER: Answer.SILENT}, LEADERS, KNOWN, 1.0)[1] == set()
    assert liveness.judge({FOLLOWER: Answer.SILENT}, LEADERS, KNOWN, 30.9)[1] == set()
    assert liveness.judge({FOLLOWER: Answer.SILENT}, LEADERS, KNOWN, 31.0)[1] == {FOLLOWER}


def test_a_silent_leader_is_never_restarted_from_here_and_forgotten_replicas_start_over() -> None:
    liveness = Liveness(leader_timeout_s=100.0, silent_restart_s=1.0)
    for now in (0.0, 5.0):
        assert liveness.judge({LEADER: Answer.SILENT}, LEADERS, KNOWN, now)[1] == set()
    liveness.judge({FOLLOWER: Answer.SILENT}, LEADERS, KNOWN, 0.0)
    liveness.judge({}, LEADERS, {LEADER}, 0.5)  # the follower was removed meanwhile
    assert liveness.judge({FOLLOWER: Answer.SILENT}, LEADERS, KNOWN, 1.2)[1] == set()
