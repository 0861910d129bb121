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
checks their effect.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer


class MainLoopConsumerThread(AIOKafkaConsumerThread):
    """Faust's consumer "thread", served as a task of the loop that starts it."""

    _serving: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """What ``ServiceThread.start`` does, with ``_serve`` as a task where it starts a thread.

        Raises:
            Exception: what starting aiokafka's consumer raised (``ServiceThread.crash``
                sets it on ``_thread_running``), as from Faust's thread.
        """
        self._thread_started.set()
        self._thread_running = asyncio.get_running_loop().create_future()
        self.add_future(self._keepalive2())
        self._serving = asyncio.ensure_future(self._serve())
        # A crash reaches the worker through ``crash`` (Faust's thread has no one to raise it to
        # either); taking it from the task spares asyncio's "exception was never retrieved".
        self._serving.add_done_callback(lambda task: task.cancelled() or task.exception())
        try:
            await self._thread_running
        finally:
            self._thread_running = None

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
