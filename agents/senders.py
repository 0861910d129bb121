"""Sends of stored txns, one HTTP attempt per (appservice, txn id), and outcomes through the inbox."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from agents.metrics import Metrics
from agents.pipeline import Pipeline
from streams.delivery import Send
from streams.machine import Input, Resume, TxnDeadLettered, TxnFailed, TxnTooLarge
from streams.matrix import AppserviceID
from streams.outcome import Outcome as HttpOutcome
from streams.outcome import as_input
from streams.records import encode_outcome

log = logging.getLogger("agents.deliverer")  # the log lines keep the logger they always had

# How long to wait before producing an outcome again when Kafka refuses it.
REPORT_RETRY_S = 1.0


# Settles one outcome of a send: (the send, what the appservice's answer means
# for the machine, the ownership epoch the send was asked for in).
Settle = Callable[[Send, Input, int | None], None]


class Senders:
    """At most one HTTP attempt per (appservice, txn id) in this process."""

    def __init__(self, pipeline: Pipeline, settle: Settle, metrics: Metrics | None = None) -> None:
        self._pipeline = pipeline
        self._settle = settle
        self._metrics = metrics
        self._running: dict[tuple[AppserviceID, int], asyncio.Task[None]] = {}
        self._failing: dict[AppserviceID, str] = {}  # why each appservice's latest attempt failed, until one succeeds

    def start(self, send: Send, epoch: int | None) -> None:
        """Start ``send``; ``epoch`` is the ownership epoch of the step that asked for it (None: unknown)."""
        key = (send.appservice_id, send.txn_id)
        if key in self._running:
            return  # a resume asked again for what is already on the wire
        task = self._pipeline.background.spawn(self._send(send, epoch), f"send {send.appservice_id} txn {send.txn_id}")
        self._running[key] = task
        task.add_done_callback(lambda _: self._running.pop(key, None))

    async def _send(self, send: Send, epoch: int | None) -> None:
        if send.dead_letter is not None:
            await self._dead_letter(send, epoch)
            return
        pipeline = self._pipeline
        registration = pipeline.registrations[send.appservice_id]
        outcome: HttpOutcome | None = None
        started = time.monotonic()
        try:
            outcome = await pipeline.client.put_transaction(registration, send.txn_id, send.body)
            result = as_input(outcome, send.txn_id, jitter=random.random())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Our bug, not the appservice's: still report a failure, so the
            # machine backs off and retries instead of waiting forever.
            log.exception("sending txn %s to %s failed inside the worker", send.txn_id, send.appservice_id)
            result = TxnFailed(send.txn_id, f"internal error: {type(exc).__name__}", None, random.random())
        if self._metrics is not None:
            self._metrics.transaction_done(send, outcome, time.monotonic() - started)
        if isinstance(result, TxnTooLarge):
            log.warning(
                "appservice %s refused txn %s as too large (%s): delivering it in smaller transactions",
                send.appservice_id,
                send.txn_id,
                result.reason,
            )
        if isinstance(result, TxnFailed):
            was = self._failing.get(send.appservice_id)
            self._failing[send.appservice_id] = result.reason
            # Loud when what is wrong changes while it is DOWN (a 503 becoming a 404); the first failure
            # is the deliverer's "is DOWN" line, the same one again is routine.
            log.log(
                logging.WARNING if was is not None and was != result.reason else logging.INFO,
                "appservice %s txn %s attempt %d failed: %s",
                send.appservice_id,
                send.txn_id,
                send.attempt,
                result.reason + (f" (was: {was})" if was is not None and was != result.reason else ""),
            )
        else:
            self._failing.pop(send.appservice_id, None)
        self._settle(send, result, epoch)

    async def _dead_letter(self, send: Send, epoch: int | None) -> None:
        """Write ``send``'s transaction to the dead-letter topic, retrying until Kafka takes it, then settle.

        The machine waits for ``TxnDeadLettered`` (and asks again after a
        restart), so giving up would stall the appservice; a repeat writes a
        second copy, never loses one.
        """
        assert send.dead_letter is not None
        while True:
            try:
                await self._pipeline.dead_letter_txn(send.appservice_id, send.txn_id, send.body, send.dead_letter)
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not dead-letter txn %s of %s; retrying", send.txn_id, send.appservice_id)
                await asyncio.sleep(REPORT_RETRY_S)
        self._settle(send, TxnDeadLettered(send.txn_id), epoch)

    async def stop(self) -> None:
        for task in list(self._running.values()):
            task.cancel()


async def report(pipeline: Pipeline, appservice_id: AppserviceID, result: Input) -> None:
    """Produce a machine input to the inbox, retrying until Kafka takes it.

    Giving up would leave the appservice waiting forever on an outcome that
    never comes; retrying is safe because stale or duplicate outcomes are
    ignored by the machine.
    """
    value = encode_outcome(result)  # type: ignore[arg-type]
    while True:
        try:
            await pipeline.inbox.send(key=appservice_id.encode(), value=value)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not produce an outcome for %s; retrying", appservice_id)
            await asyncio.sleep(REPORT_RETRY_S)


async def resume_all(pipeline: Pipeline) -> None:
    for appservice_id, registration in pipeline.registrations.items():
        if registration.url is not None:
            await report(pipeline, appservice_id, Resume())


__all__ = ["REPORT_RETRY_S", "Senders", "Settle", "report", "resume_all"]
