"""The delay agent: retry timers carried by the delay topic.

A failed transaction's retry is a record ``(txn id, due time, attempt)`` on
the delay topic, keyed by appservice ID. This agent arms an in-process timer
per appservice (the latest record wins) and, when it fires, puts a
``RetryDue`` into the inbox, where the machine resends the stored txn. A timer
lost in a crash is not a lost retry: the machine state says the appservice is
backing off, and the ``Resume`` every worker sends after a rebalance re-arms
it (``streams.machine``), so the delay topic need not hold offsets back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agents.fatal import fatal
from agents.pipeline import Pipeline, now_ms
from agents.senders import report
from streams.dead_letter import Reason
from streams.errors import BadRecord
from streams.machine import RetryDue
from streams.matrix import AppserviceID
from streams.records import DelayRecord, decode_delay

log = logging.getLogger(__name__)


def install(pipeline: Pipeline) -> None:
    timers: dict[AppserviceID, asyncio.TimerHandle] = {}

    def fire(appservice_id: AppserviceID, record: DelayRecord) -> None:
        timers.pop(appservice_id, None)
        pipeline.background.spawn(
            report(pipeline, appservice_id, RetryDue(record.txn_id)), f"retry {appservice_id} txn {record.txn_id}"
        )

    @pipeline.app.agent(pipeline.delay, name="delayer")  # type: ignore[untyped-decorator]
    async def delay(stream: Any) -> None:
        loop = asyncio.get_running_loop()
        async for event in stream.events():
            try:
                arm(loop, event)
                pipeline.acks.processed([event])
            except BadRecord as exc:
                await pipeline.to_dead_letter(event, Reason.MALFORMED, str(exc))
                pipeline.acks.processed([event])
            except Exception as exc:
                fatal(exc, "delayer")

    def arm(loop: asyncio.AbstractEventLoop, event: Any) -> None:
        """Raises: BadRecord for a record that is not a delay record."""
        record = decode_delay(event.value)
        appservice_id = AppserviceID(bytes(event.key).decode())
        previous = timers.pop(appservice_id, None)
        if previous is not None:
            previous.cancel()
        wait_s = max(0, record.due_ms - now_ms()) / 1000
        log.info(
            "appservice %s: retry of txn %s (attempt %d) in %.3f s",
            appservice_id,
            record.txn_id,
            record.attempt,
            wait_s,
        )
        timers[appservice_id] = loop.call_later(wait_s, fire, appservice_id, record)
