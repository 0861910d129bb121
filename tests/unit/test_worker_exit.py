"""A Faust worker that crashes exits 70 (restart me), not mode's undocumented 1."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import NodeNotReadyError
from mode import Service, Worker

from agents.cli import run_faust_worker
from agents.fatal import EXIT_CODE


class StartsWhileANodeIsDown(Service):
    async def on_start(self) -> None:
        # What Faust's LeaderAssignor raised when aiokafka's controller node was down.
        raise NodeNotReadyError("Attempt to send a request to node which is not ready (node id 3).")


def test_a_faust_worker_whose_start_crashes_exits_70() -> None:
    loop = asyncio.new_event_loop()
    worker = Worker(StartsWhileANodeIsDown(loop=loop), loop=loop, quiet=True, redirect_stdouts=False)
    with pytest.raises(SystemExit) as ended:
        run_faust_worker(worker)
    assert ended.value.code == EXIT_CODE
    assert isinstance(ended.value.__cause__, SystemExit) and ended.value.__cause__.code == 1, "mode's own code"
