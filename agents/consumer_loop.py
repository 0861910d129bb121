"""Faust's aiokafka consumer, served on the worker's event loop instead of a thread of its own.

Faust's aiokafka driver runs its ``AIOKafkaConsumer`` in a mode
``ServiceThread``: a second thread with its own event loop, reached through a
method queue, so that every ``getmany`` of Faust's fetch loop (and every
commit and seek) is a call across threads and loops, and the two threads
take turns at the GIL. Here the same ``AIOKafkaConsumerThread`` (its method
queue, rebalance callbacks and fetch) is served on the loop that starts it:
the hand-offs become callbacks on one loop, and aiokafka's fetcher never runs
beside the code that seeks it. Latency at 1,000 events/s, started fresh:
faster in 6 of 8 alternating pairs, p50 medians 36.9 against 44.7 ms
(docs/decisions/consumer-on-main-loop.md).

Private hooks (Faust's ``Transport.Consumer`` and
``Consumer._new_consumer_thread``; mode's ``ServiceThread.start``, ``_serve``
and ``_gather_remaining_tasks``): ``tests/integration/test_faust_hooks.py``
and ``tests/unit/test_faust_hooks.py`` check their effect.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from mode.utils.futures import maybe_set_exception

log = logging.getLogger(__name__)


class MainLoopConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer "thread", served as a task of the loop that starts it."""

    _serving: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """What ``ServiceThread.start`` does, with ``_serve`` as a task where it starts a thread.

        Raises:
            Exception: what starting aiokafka's consumer raised (``ServiceThread.crash``
                sets it on ``_thread_running``), as from Faust's thread.
            asyncio.CancelledError: the task serving it ended before it started.
        """
        self._thread_started.set()
        self._thread_running = asyncio.get_running_loop().create_future()
        self.add_future(self._keepalive2())
        self._serving = asyncio.ensure_future(self._serve())
        self._serving.add_done_callback(self._served)
        try:
            await self._thread_running
        finally:
            self._thread_running = None

    def _served(self, task: asyncio.Task[None]) -> None:
        """The serving task ended: what Faust's thread does when ``_serve`` returns or raises."""
        error = None if task.cancelled() else task.exception()
        if error is not None or task.cancelled():
            # As ServiceThread._start_thread: a stop waiting for the shutdown must not wait out its
            # timeout when _serve failed before it set the shutdown itself.
            self.set_shutdown()
        if self._thread_running is not None:
            maybe_set_exception(self._thread_running, error or asyncio.CancelledError())
        if error is not None and error is not self.crash_reason:
            # Raised in _serve's finally (stopping aiokafka): ServiceThread.crash never saw it.
            log.error("Faust's consumer service ended with %r", error, exc_info=error)

    async def stop(self) -> None:
        """Stop as ``ServiceThread.stop`` does, then wait for the serving task, as Faust joins its thread."""
        await super().stop()
        serving = self._serving
        if serving is not None and serving is not asyncio.current_task():
            await asyncio.wait([serving])

    async def _gather_remaining_tasks(self) -> None:
        # mode cancels every task left on the thread's loop when its service ends: here that loop
        # is the worker's. aiokafka's own tasks end with its consumer (``on_thread_stop``).
        return None


class MainLoopConsumer(Consumer):
    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return MainLoopConsumerThread(self, loop=self.loop, thread_loop=self.loop, beacon=self.beacon)


def consume_on_main_loop(app: Any) -> None:
    """Have ``app`` (a ``faust.App``, not started) serve its aiokafka consumer on the app's event loop.

    No I/O. Call it before anything reads ``app.consumer``: a consumer built
    before keeps Faust's thread.
    """
    app.transport.Consumer = MainLoopConsumer


__all__ = ["MainLoopConsumer", "MainLoopConsumerThread", "consume_on_main_loop"]
