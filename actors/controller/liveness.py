"""Which replicas the Controller treats as hung or gone, from its probes' answers over time
(no Ray, no clock of its own: ``judge`` is given the time).

* A **leader** of a replicated partition that has not answered for ``leader.probe.timeout.ms``
  is *hung*: the failover plan elects another leader (the epoch bump fences it if it wakes).
* A replica whose actor **died** or could never be scheduled on its node is *gone*: it is
  started again where its data is (or replaced, if its node died).
* A **follower** silent for ``silent_restart_s`` is *gone* too: its creation stayed pending (as
  seen after many node changes) or it is wedged, and leaving it would keep its partition short
  of replicas. A silent leader is the failover's to handle, never restarted from here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

ReplicaKey = tuple[str, int, str]  # (topic id, partition, slot)
PartitionKey = tuple[str, int]  # (topic id, partition)


class Answer(str, enum.Enum):
    UP = "up"  # answered the probe
    DEAD = "dead"  # its actor died, or cannot be scheduled
    SILENT = "silent"  # no answer in time (hung, busy, restarting, or never started)


class Liveness:
    def __init__(self, leader_timeout_s: float, silent_restart_s: float) -> None:
        self.leader_timeout_s = leader_timeout_s
        self.silent_restart_s = silent_restart_s
        self._leader_silent_since: dict[PartitionKey, float] = {}
        self._silent_since: dict[ReplicaKey, float] = {}

    def judge(
        self,
        answers: dict[ReplicaKey, Answer],
        leaders: dict[PartitionKey, str],
        known: Iterable[ReplicaKey],
        now: float,
    ) -> tuple[set[PartitionKey], set[ReplicaKey]]:
        """(hung leaders, gone replicas) after one round of probes.

        ``leaders`` maps each replicated partition to its leader's slot; ``known`` is every
        replica the Controller runs (the memory of others is dropped).
        """
        known = set(known)
        for key in set(self._silent_since) - known:
            del self._silent_since[key]
        hung: set[PartitionKey] = set()
        gone: set[ReplicaKey] = set()
        for key, answer in answers.items():
            topic_id, partition, slot = key
            leads = leaders.get((topic_id, partition)) == slot
            if answer is Answer.DEAD:
                gone.add(key)
            elif answer is Answer.UP:
                self._silent_since.pop(key, None)
            elif not leads:
                first = self._silent_since.setdefault(key, now)
                if now - first >= self.silent_restart_s:
                    gone.add(key)
                    del self._silent_since[key]
            if leads and self._leader_hung((topic_id, partition), answer, now):
                hung.add((topic_id, partition))
        return hung, gone

    def _leader_hung(self, key: PartitionKey, answer: Answer, now: float) -> bool:
        if answer is Answer.UP:
            self._leader_silent_since.pop(key, None)
            return False
        first = self._leader_silent_since.setdefault(key, now)
        if now - first >= self.leader_timeout_s:
            del self._leader_silent_since[key]
            return True
        return False
