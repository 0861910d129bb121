"""A send that breaks inside the worker becomes a failed attempt, never a stall."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agents.background import BackgroundTasks
from agents.senders import Senders
from streams.delivery import Send
from streams.machine import Input, TxnDeadLettered, TxnFailed, TxnSucceeded
from streams.matrix import AppserviceID, TxnID
from streams.outcome import Delivered, HttpError, Outcome
from streams.registration import parse_registration

REGISTRATION = parse_registration(
    {
        "id": "bridge",
        "url": "http://127.0.0.1:9",
        "as_token": "a",
        "hs_token": "h",
        "sender_localpart": "bot",
        "namespaces": {"users": [], "rooms": [], "aliases": []},
    },
    Path("bridge.yaml"),
)


class Settled:
    """Records what each finished send handed on to be settled."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[Send, Input, int | None]] = []

    def __call__(self, send: Send, result: Input, epoch: int | None) -> None:
        self.outcomes.append((send, result, epoch))


class Client:
    def __init__(self, outcome: Outcome | Exception) -> None:
        self.outcome = outcome
        self.calls = 0

    async def put_transaction(self, registration: Any, txn_id: TxnID, body: bytes) -> Outcome:
        self.calls += 1
        await asyncio.sleep(0.01)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def pipeline(client: Client) -> Any:
    return SimpleNamespace(
        registrations={AppserviceID("bridge"): REGISTRATION}, client=client, background=BackgroundTasks()
    )


SEND = Send(AppserviceID("bridge"), TxnID(7), 0, b'{"events":[]}')


async def test_an_exception_while_sending_is_settled_as_a_failed_attempt() -> None:
    settled = Settled()
    Senders(pipeline(Client(RuntimeError("bug"))), settled).start(SEND, 3)
    await asyncio.sleep(0.1)
    [(send, result, epoch)] = settled.outcomes
    assert send == SEND and epoch == 3
    assert isinstance(result, TxnFailed) and result.txn_id == 7 and "RuntimeError" in result.reason


async def test_a_delivered_txn_is_settled_as_succeeded_with_the_epoch_of_its_step() -> None:
    settled = Settled()
    Senders(pipeline(Client(Delivered(200))), settled).start(SEND, None)
    await asyncio.sleep(0.1)
    assert [(type(result), epoch) for _, result, epoch in settled.outcomes] == [(TxnSucceeded, None)]


async def test_a_txn_already_on_the_wire_is_not_sent_twice_by_one_worker() -> None:
    client = Client(Delivered(200))
    settled = Settled()
    senders = Senders(pipeline(client), settled)
    senders.start(SEND, 1)
    senders.start(SEND, 1)  # a Resume while the first attempt is in flight
    await asyncio.sleep(0.1)
    assert client.calls == 1
    assert len(settled.outcomes) == 1


async def test_a_change_of_what_fails_while_down_is_logged_loudly_the_same_failure_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Client(HttpError(503))
    senders = Senders(pipeline(client), Settled())
    caplog.set_level(logging.INFO, logger="agents.deliverer")
    for attempt, outcome in enumerate([HttpError(503), HttpError(503), HttpError(404), Delivered(200), HttpError(404)]):
        client.outcome = outcome
        senders.start(Send(AppserviceID("bridge"), TxnID(7 + attempt), attempt, b"{}"), None)
        await asyncio.sleep(0.05)
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == ["appservice bridge txn 9 attempt 2 failed: HTTP 404 (was: HTTP 503)"]


async def test_a_dead_letter_send_is_written_until_kafka_takes_it_then_settled_never_put(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("agents.senders.REPORT_RETRY_S", 0.01)
    written: list[tuple[str, int, bytes, str]] = []
    failures = [RuntimeError("broker away")]

    async def dead_letter_txn(appservice_id: str, txn_id: int, body: bytes, detail: str) -> None:
        if failures:
            raise failures.pop()
        written.append((appservice_id, txn_id, body, detail))

    client = Client(Delivered(200))
    target = pipeline(client)
    target.dead_letter_txn = dead_letter_txn
    settled = Settled()
    Senders(target, settled).start(Send(AppserviceID("bridge"), TxnID(7), 0, b"{}", dead_letter="one item"), 2)
    await asyncio.sleep(0.2)
    assert written == [("bridge", 7, b"{}", "one item")]
    assert [(result, epoch) for _, result, epoch in settled.outcomes] == [(TxnDeadLettered(TxnID(7)), 2)]
    assert client.calls == 0
