"""SharePartition, the share-group decisions, without Ray: delivery, locks, acknowledgements,
dead letters, priorities and the starvation rule, snapshots — and a Hypothesis model run that
crashes the leader at random and checks that every record ends accepted or dead-lettered
exactly once."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ray_broker.actors.partition.share_state import SharePartition, ShareSettings, State
from ray_broker.structs import AcknowledgeType

ACCEPT, RELEASE, REJECT = AcknowledgeType.ACCEPT, AcknowledgeType.RELEASE, AcknowledgeType.REJECT


def window(n: int, settings: ShareSettings | None = None, priorities=None) -> SharePartition:
    share = SharePartition(settings or ShareSettings(lock_duration_ms=1_000))
    share.admit(list(range(n)), priorities, n)
    return share


def test_records_are_delivered_oldest_first_to_one_member_at_a_time():
    share = window(10)
    first = share.acquire("a", 4, now_ms=0)
    second = share.acquire("b", 4, now_ms=0)
    assert [a.offset for a in first] == [0, 1, 2, 3]
    assert [a.offset for a in second] == [4, 5, 6, 7]
    assert all(a.delivery_count == 1 for a in first + second)


def test_only_the_holder_of_a_live_lock_can_acknowledge():
    share = window(3)
    share.acquire("a", 2, now_ms=0)
    assert share.acknowledge("b", [0], ACCEPT, now_ms=10) == [0]  # another member's lock
    assert share.acknowledge("a", [2], ACCEPT, now_ms=10) == [2]  # never delivered
    assert share.acknowledge("a", [1], ACCEPT, now_ms=2_000) == [1]  # lock expired
    assert share.acknowledge("a", [0], ACCEPT, now_ms=10) == []
    assert share.acknowledge("a", [0], ACCEPT, now_ms=10) == [0]  # already answered
    assert share.start_offset == 1


def test_an_expired_lock_makes_the_record_available_again_with_its_count():
    share = window(2)
    share.acquire("a", 1, now_ms=0)
    assert share.acquire("b", 1, now_ms=500)[0].offset == 1
    assert share.expire(now_ms=1_001)
    again = share.acquire("b", 5, now_ms=1_001)
    assert [(a.offset, a.delivery_count) for a in again] == [(0, 2)]


def test_release_redelivers_and_the_delivery_limit_dead_letters():
    share = window(1, ShareSettings(lock_duration_ms=1_000, delivery_count_limit=2))
    share.acquire("a", 1, now_ms=0)
    share.acknowledge("a", [0], RELEASE, now_ms=1)
    assert share.acquire("a", 1, now_ms=2)[0].delivery_count == 2
    share.acknowledge("a", [0], RELEASE, now_ms=3, error="boom")
    assert share.records[0].state == State.DEAD_LETTERING
    assert share.records[0].reason == "delivery.count.limit"
    assert share.acquire("a", 1, now_ms=4) == []
    [(offset, delivery)] = share.dead_letters(10)
    assert (offset, delivery.error) == (0, "boom")
    base = share.begin_dead_letter_batch([0], producer_id=7)
    assert base == 0 and share.start_offset == 0  # not finished before the copy is written
    share.dead_letter_batch_written()
    assert share.start_offset == 1 and share.dlq_next_sequence == 1


def test_release_backoff_delays_the_next_delivery():
    share = window(1, ShareSettings(lock_duration_ms=1_000, release_backoff_ms=500))
    share.acquire("a", 1, now_ms=0)
    share.acknowledge("a", [0], RELEASE, now_ms=100)
    assert share.acquire("a", 1, now_ms=599) == []
    assert share.next_change_ms() == 600
    assert share.acquire("a", 1, now_ms=600)[0].delivery_count == 2


def test_reject_dead_letters_at_once_and_without_a_topic_archives():
    share = window(2, ShareSettings(dead_letters=False))
    share.acquire("a", 2, now_ms=0)
    share.acknowledge("a", [0, 1], REJECT, now_ms=1)
    assert share.start_offset == 2 and share.dead_letters(10) == []


def test_higher_priorities_first_and_every_nth_delivery_takes_the_oldest():
    settings = ShareSettings(lock_duration_ms=10_000, fifo_every=4, prioritized=True)
    share = window(20, settings, priorities=[0] * 2 + [9] * 18)
    order = [share.acquire("a", 1, now_ms=0)[0].offset for _ in range(8)]
    # Three urgent ones, then the oldest (offset 0, priority 0), three urgent, then offset 1.
    assert order == [2, 3, 4, 0, 5, 6, 7, 1]


def test_the_window_is_bounded_and_slides_as_records_finish():
    share = SharePartition(ShareSettings(max_inflight=3))
    assert share.room() == 3
    share.admit([0, 1, 2], None, 3)
    assert share.room() == 0
    share.acquire("a", 3, now_ms=0)
    share.acknowledge("a", [0, 1], ACCEPT, now_ms=1)
    assert share.room() == 2 and share.start_offset == 2


def test_hidden_offsets_count_as_finished():
    share = SharePartition(ShareSettings())
    share.admit([0, 3], None, 5)  # 1, 2 and 4 were control records or aborted
    share.acquire("a", 5, now_ms=0)
    share.acknowledge("a", [0, 3], ACCEPT, now_ms=1)
    assert share.start_offset == 5


def test_a_snapshot_keeps_finished_runs_counts_and_dead_letters_but_not_locks():
    share = window(6)
    share.acquire("a", 6, now_ms=0)
    share.acknowledge("a", [0, 1, 3], ACCEPT, now_ms=1)
    share.acknowledge("a", [4], REJECT, now_ms=1, error="x")
    restored = SharePartition.restore(share.settings, share.snapshot())
    restored.admit(list(range(2, 6)), None, 6)
    assert restored.start_offset == 2
    assert restored.records[2].state == State.AVAILABLE and restored.records[2].count == 1
    assert restored.records[3].state == State.ACKNOWLEDGED  # finished, kept until passed
    assert restored.records[4].state == State.DEAD_LETTERING and restored.records[4].error == "x"
    assert [a.offset for a in restored.acquire("b", 10, now_ms=5)] == [2, 5]


def test_a_snapshot_before_the_window_is_read_back_keeps_the_rest():
    share = window(6)
    share.acquire("a", 6, now_ms=0)
    share.acknowledge("a", [1, 4], ACCEPT, now_ms=1)
    share.acknowledge("a", [5], REJECT, now_ms=1)
    restored = SharePartition.restore(share.settings, share.snapshot())
    restored.admit([0, 1], None, 2)  # large records: the read returned two
    again = SharePartition.restore(share.settings, restored.snapshot())
    again.admit(list(range(6)), None, 6)
    assert again.records[4].state == State.ACKNOWLEDGED
    assert again.records[5].state == State.DEAD_LETTERING
    assert again.records[3].count == 1


def test_retention_past_the_start_finishes_what_it_deleted():
    share = window(5)
    share.skip_to(3)
    assert share.start_offset == 3
    assert [a.offset for a in share.acquire("a", 1, now_ms=0)] == [3]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["acquire", "accept", "release", "reject", "tick", "crash", "letters"]),
            st.integers(0, 2),  # member
            st.integers(1, 6),  # how many
        ),
        max_size=60,
    ),
    st.booleans(),
)
def test_every_record_ends_accepted_or_dead_lettered_exactly_once(steps, prioritized):
    records = 25
    settings_ = ShareSettings(
        lock_duration_ms=100, delivery_count_limit=3, max_inflight=10, prioritized=prioritized
    )
    log = list(range(records))
    share = SharePartition(settings_)
    now = 0
    held: dict[str, list[int]] = {"m0": [], "m1": [], "m2": []}
    accepted: list[int] = []
    dead: list[int] = []
    saved = share.snapshot()  # what the group coordinator holds

    def fill() -> None:
        room = share.room()
        start = share.end_offset
        admitted = log[start : start + room]
        priorities = [o % 3 for o in admitted] if prioritized else None
        share.admit(admitted, priorities, min(start + room, records))

    written: set[int] = set()  # base sequences the dead-letter partition has (idempotence)

    def write_batch() -> None:
        if share.dlq_next_sequence not in written:
            written.add(share.dlq_next_sequence)
            dead.extend(share.dlq_batch)

    def write_dead_letters(stage: int = 2) -> None:
        """stage 0: fix a batch; 1: also write it; 2: write and mark every batch written."""
        while True:
            waiting = share.dead_letters(100)
            if share.dlq_batch is None and not waiting:
                return
            if share.dlq_batch is None:
                share.begin_dead_letter_batch([o for o, _ in waiting], producer_id=1)
                save()  # before the write, as the leader does
            if stage == 0:
                return
            write_batch()
            if stage == 1:
                return
            share.dead_letter_batch_written()
            save()

    def save() -> None:
        nonlocal saved
        saved = share.snapshot()

    def answer(member: str, count: int, kind: AcknowledgeType) -> None:
        chosen, held[member] = held[member][:count], held[member][count:]
        failed = share.acknowledge(member, chosen, kind, now)
        save()  # acknowledgements are durable before they are answered
        if kind == ACCEPT:
            accepted.extend(o for o in chosen if o not in failed)

    for action, member_index, count in steps:
        member = f"m{member_index}"
        fill()
        if action == "acquire":
            got = [a.offset for a in share.acquire(member, count, now)]
            # A record whose lock expired may come back to the same member: it holds it once.
            held[member] = [o for o in held[member] if o not in got] + got
        elif action in ("accept", "release", "reject"):
            answer(member, count, AcknowledgeType(action))
        elif action == "tick":
            now += 60
            share.expire(now)
        elif action == "letters":  # the dead-letter writer gets part of the way
            write_dead_letters(stage=member_index)
        else:  # the leader crashes: only the last saved snapshot survives; locks are lost
            share = SharePartition.restore(settings_, saved)
            held = {m: [] for m in held}
    # Drain: one member takes and accepts everything that is left.
    for _ in range(records * settings_.delivery_count_limit + 5):
        fill()
        now += 200
        share.expire(now)
        write_dead_letters()
        got = [a.offset for a in share.acquire("drain", 100, now)]
        share.acknowledge("drain", got, ACCEPT, now)
        accepted.extend(got)
    assert share.start_offset == records
    assert sorted(accepted + dead) == log, "lost or doubled"
