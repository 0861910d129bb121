"""Batches that grow with load: take what the stream has queued, then process it.

Faust's ``Stream.take_events(max, within)`` yields when ``max`` events are
buffered or ``within`` seconds have passed, and refuses new events while a
batch is processed. So it refills from empty after every batch, for
``within`` seconds: at low load each event waits out the window, and under
load batches stay as small as what Faust moves in one window (figures:
docs/decisions/batching.md).

``take_available`` yields as soon as the agent's channel queue is empty (no
wait at low load) or ``max_`` events are buffered. What arrives while a batch
is processed waits in the channel queue and makes the next batch, so batch
size follows the backlog. ``within`` is only a safety net for an event whose
queue never looks empty.

It is ``take_events`` with one more flush condition, and keeps its contract:
the yielded list is the caller's until the next iteration, and each event is
acked (through ``agents.positions.AckFilter``) after the caller is done with
the batch. It drives Faust's stream through private parts (``_enable_passive``,
``_processors``, ``enable_acks``): tests/unit/test_faust_hooks.py checks
their effect.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any


async def take_available(stream: Any, max_: int, within: float) -> AsyncIterator[list[Any]]:
    """Yield lists of at most ``max_`` Faust events, each as soon as the queue runs dry.

    Raises:
        RuntimeError: an event reached the buffer without being current
            (a Faust internals change; the same check Faust makes).
    """
    events: list[Any] = []
    ready = asyncio.Event()
    consumed = asyncio.Event()
    consuming: asyncio.Future[None] | None = None
    queue = stream.channel.queue
    enable_acks = stream.enable_acks

    async def add(value: Any) -> Any:
        nonlocal consuming
        if consuming is not None:
            try:
                await consuming
            finally:
                consuming = None
        event = stream.current_event
        if event is None:
            raise RuntimeError("take_available: an event reached the buffer while none was current")
        events.append(event)
        if len(events) >= max_:
            ready.set()
            # Strictly at most max_ per batch: hold this drainer until taken.
            consumed.clear()
            await stream.wait(consumed)
        elif queue.empty():
            ready.set()
        return value

    # Faust acks each event when the next is read; here acks wait for the
    # caller to finish the batch.
    stream.enable_acks = False
    stream.add_processor(add)
    stream._enable_passive(stream.channel)
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(ready, timeout=within)
            if not events:
                continue
            consuming = asyncio.get_running_loop().create_future()
            try:
                yield list(events)
            finally:
                taken = list(events)
                events.clear()
                ready.clear()
                for event in taken:
                    await stream.ack(event)
                if not consuming.done():
                    consuming.set_result(None)
                consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add)
