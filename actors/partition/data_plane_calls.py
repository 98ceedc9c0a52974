"""The partition's data-plane calls: where its listener is, and how a direct request is served
— by the very calls Ray serves (``produce`` and ``fetch`` with the connection's session; a
leader's ``epoch_state``, ``truncate`` and ``replicate`` with the internal token its Hello
carried, checked as over Ray). See ``data_plane_server.py`` for the connection's rules."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ray_broker import frames
from ray_broker.actors.partition.data_plane_server import DataPlaneServer
from ray_broker.actors.partition.replica import Role
from ray_broker.actors.partition.shell import PartitionShell
from ray_broker.errors import InvalidRequest, NotLeader


class DataPlaneCalls(PartitionShell):
    _data_plane: DataPlaneServer | None = None

    async def data_endpoint(self, *, session: str = "") -> tuple[str, int]:
        """(host, port) of this replica's data-plane listener, started on the node's Ray
        address at the first call.

        Raises:
            AuthenticationFailed, Unauthorized: the session may not describe the topic.
        """
        import ray

        await self._access(session, "describe", "topic", self.core.topic)
        if self._data_plane is None:
            self._data_plane = DataPlaneServer(self.core.name, self._serve_direct, self._welcome)
        return await self._data_plane.start(ray.util.get_node_ip_address())

    async def _welcome(self, session: str) -> frames.Welcome:
        """Raises AuthenticationFailed: a secured broker refuses the session."""
        await self._who(session)
        leading = self.replica.role == Role.LEADER
        epoch = self.replica.leader_epoch if leading else frames.NO_EPOCH
        return frames.Welcome(epoch, self.core.topic, self.core.partition)

    async def _serve_direct(
        self, session: str, envelope: frames.Envelope, body: memoryview
    ) -> tuple[frames.Result, Any]:
        if envelope.epoch != frames.NO_EPOCH and envelope.epoch != self.replica.leader_epoch:
            raise NotLeader(
                f"{self.core.name}: this replica knows leader epoch "
                f"{self.replica.leader_epoch}, not {envelope.epoch}; refresh metadata",
                topic=self.core.topic,
                partition=self.core.partition,
                leader_epoch=self.replica.leader_epoch,
            )
        request = envelope.request
        if isinstance(request, frames.Produce):
            produced = await self.produce(  # type: ignore[attr-defined]
                pa.py_buffer(body), **frames.arguments(request), session=session
            )
            return frames.carried(frames.Produced, produced), None
        if isinstance(request, frames.Fetch):
            fetched = await self.fetch(  # type: ignore[attr-defined]
                **frames.arguments(request), session=session
            )
            return frames.carried(frames.Fetched, fetched), memoryview(fetched.records_ipc)
        if isinstance(request, frames.Replicate):
            records = pa.py_buffer(body) if len(body) else None
            end = await self.replicate(  # type: ignore[attr-defined]
                request.epoch,
                records,
                [tuple(e) for e in request.epochs],
                request.high_watermark,
                token=session,
            )
            return frames.LogEnd(end), None
        if isinstance(request, frames.EpochState):
            entries, end = await self.epoch_state(request.epoch, token=session)  # type: ignore[attr-defined]
            return frames.EpochStated([tuple(e) for e in entries], end), None
        if isinstance(request, frames.Truncate):
            end = await self.truncate(  # type: ignore[attr-defined]
                request.epoch,
                request.offset,
                request.leader_log_start,
                request.expected_end,
                token=session,
            )
            return frames.LogEnd(end), None
        raise InvalidRequest(f"a data-plane request of kind {type(request).__name__}")
