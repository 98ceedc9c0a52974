"""A connection's writes to one partition: in order, one call in flight, plain batches that
waited merged into the next call with each request's own base offset."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pyarrow as pa

from ray_broker.kafka.partition_lane import PartitionLane, Write
from ray_broker.storage.ipc import from_ipc


class Leader:
    """Stands in for a partition actor's handle: records each call, answers when told."""

    def __init__(self) -> None:
        self.calls: list[tuple[pa.Table, tuple]] = []
        self.pending: list[asyncio.Future] = []
        self.next_offset = 0
        self.produce = SimpleNamespace(remote=self._remote)

    def _remote(self, ipc, producer_id, epoch, sequence, acks, *rest, session=""):
        table = from_ipc(ipc)
        self.calls.append((table, (producer_id, epoch, sequence, acks)))
        future = asyncio.get_running_loop().create_future()
        self.pending.append((future, table.num_rows))
        return future

    def answer_one(self) -> None:
        future, rows = self.pending.pop(0)
        future.set_result(
            SimpleNamespace(base_offset=self.next_offset, log_start_offset=0, throttle_time_ms=0)
        )
        self.next_offset += rows


class ByCall:
    """The lane's transport (``PartitionTransport``), calling the stand-in leader directly."""

    def produce(self, leader, *args, session=""):
        return leader.produce.remote(*args, session=session)


def write(leader, values, producer_id=None, sequence=0, acks=-1) -> Write:
    return Write(
        leader,
        pa.table({"value": pa.array(values, pa.binary())}),
        producer_id,
        0,
        sequence,
        False,
        acks,
        "client",
        "",
        30.0,
        asyncio.get_running_loop().create_future(),
    )


def test_plain_writes_that_wait_are_merged_and_each_gets_its_offsets():
    async def scenario():
        leader, lane = Leader(), PartitionLane(ByCall())
        writes = [write(leader, [b"a"]), write(leader, [b"b", b"c"]), write(leader, [b"d"])]
        for w in writes:
            lane.write(w)
        assert len(leader.calls) == 1  # the first goes at once, the others wait
        leader.answer_one()
        await asyncio.sleep(0.05)
        assert len(leader.calls) == 2
        assert leader.calls[1][0].column("value").to_pylist() == [b"b", b"c", b"d"]
        leader.answer_one()
        results = [await w.answer for w in writes]
        assert [r[0] for r in results] == [0, 1, 3]
        assert lane.idle

    asyncio.run(scenario())


def test_idempotent_batches_and_different_acks_are_never_merged():
    async def scenario():
        leader, lane = Leader(), PartitionLane(ByCall())
        writes = [
            write(leader, [b"a"]),
            write(leader, [b"b"], producer_id=7, sequence=0),
            write(leader, [b"c"], producer_id=7, sequence=1),
            write(leader, [b"d"], acks=1),
        ]
        for w in writes:
            lane.write(w)
        for _ in range(4):
            leader.answer_one()
            await asyncio.sleep(0.05)
        assert [t.num_rows for t, _ in leader.calls] == [1, 1, 1, 1]
        assert [args for _, args in leader.calls][1:3] == [(7, 0, 0, -1), (7, 0, 1, -1)]
        assert [(await w.answer)[0] for w in writes] == [0, 1, 2, 3]

    asyncio.run(scenario())


def test_a_failed_call_fails_every_request_merged_into_it():
    from ray_broker.errors import NotLeader

    async def scenario():
        leader, lane = Leader(), PartitionLane(ByCall())
        first, second, third = (write(leader, [v]) for v in (b"a", b"b", b"c"))
        for w in (first, second, third):
            lane.write(w)
        leader.answer_one()
        await asyncio.sleep(0.05)
        future, _ = leader.pending.pop(0)
        future.set_exception(NotLeader("moved"))
        for w in (second, third):
            try:
                await w.answer
            except NotLeader:
                continue
            raise AssertionError("the merged write did not fail")
        assert (await first.answer)[0] == 0

    asyncio.run(scenario())
