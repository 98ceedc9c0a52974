"""Partition assignment strategies, as Kafka names them (``partition.assignment.strategy``).

Each takes the members' subscriptions (member id → topics), the partition count of each topic and
the current assignment (for the sticky ones) and returns member id → set of (topic, partition).
Members are ordered by name so every run gives the same answer for the same input (the group
names static members by their instance id, so a restart does not reshuffle them).

``cooperative-sticky`` computes the same target as ``sticky``; what differs is the client: it
keeps consuming the partitions it retains and gives up only those that move (KIP-429), while the
eager strategies give up everything at each rebalance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

TopicPartitionKey = tuple[str, int]
Assignment = dict[str, set[TopicPartitionKey]]
Assignor = Callable[
    [Mapping[str, set[str]], Mapping[str, int], Mapping[str, set[TopicPartitionKey]]], Assignment
]

EAGER_STRATEGIES = ("range", "roundrobin", "sticky")
COOPERATIVE_STRATEGIES = ("cooperative-sticky",)
STRATEGIES = EAGER_STRATEGIES + COOPERATIVE_STRATEGIES


def range_assignor(
    subscriptions: Mapping[str, set[str]],
    partitions: Mapping[str, int],
    current: Mapping[str, set[TopicPartitionKey]],
) -> Assignment:
    """Per topic, contiguous ranges of partitions; the first members get one extra."""
    assignment: Assignment = {member: set() for member in subscriptions}
    for topic in sorted(partitions):
        members = sorted(m for m, topics in subscriptions.items() if topic in topics)
        if not members:
            continue
        count = partitions[topic]
        per_member, extra = divmod(count, len(members))
        start = 0
        for index, member in enumerate(members):
            size = per_member + (1 if index < extra else 0)
            assignment[member].update((topic, p) for p in range(start, start + size))
            start += size
    return assignment


def roundrobin_assignor(
    subscriptions: Mapping[str, set[str]],
    partitions: Mapping[str, int],
    current: Mapping[str, set[TopicPartitionKey]],
) -> Assignment:
    """All partitions in order, dealt to the members in turn (skipping unsubscribed ones)."""
    assignment: Assignment = {member: set() for member in subscriptions}
    members = sorted(subscriptions)
    if not members:
        return assignment
    turn = 0
    for topic in sorted(partitions):
        for partition in range(partitions[topic]):
            for _ in range(len(members)):
                member = members[turn % len(members)]
                turn += 1
                if topic in subscriptions[member]:
                    assignment[member].add((topic, partition))
                    break
    return assignment


def sticky_assignor(
    subscriptions: Mapping[str, set[str]],
    partitions: Mapping[str, int],
    current: Mapping[str, set[TopicPartitionKey]],
) -> Assignment:
    """Balanced like round-robin, but members keep as many of their current partitions as the
    balance allows, so a rebalance moves as few partitions as possible."""
    members = sorted(subscriptions)
    assignment: Assignment = {member: set() for member in members}
    if not members:
        return assignment
    every = [(t, p) for t in sorted(partitions) for p in range(partitions[t])]
    quota, extra = divmod(len(every), len(members))
    # Members that already hold more keep more (up to quota + 1) before others fill up.
    order = sorted(members, key=lambda m: (-len(current.get(m, ())), m))
    capacity = {m: quota + (1 if i < extra else 0) for i, m in enumerate(order)}
    taken: set[TopicPartitionKey] = set()
    for member in order:
        keep = sorted(
            tp
            for tp in current.get(member, ())
            if tp[0] in subscriptions[member]
            and tp[0] in partitions
            and tp[1] < partitions[tp[0]]
            and tp not in taken
        )[: capacity[member]]
        assignment[member].update(keep)
        taken.update(keep)
    for tp in every:
        if tp in taken:
            continue
        eligible = [m for m in members if tp[0] in subscriptions[m]]
        if not eligible:
            continue
        below = [m for m in eligible if len(assignment[m]) < capacity[m]] or eligible
        member = min(below, key=lambda m: (len(assignment[m]), m))
        assignment[member].add(tp)
        taken.add(tp)
    return assignment


ASSIGNORS: dict[str, Assignor] = {
    "range": range_assignor,
    "roundrobin": roundrobin_assignor,
    "sticky": sticky_assignor,
    "cooperative-sticky": sticky_assignor,
}
