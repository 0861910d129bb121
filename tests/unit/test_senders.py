"""A send that breaks inside the worker becomes a failed attempt, never a stall."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agents.background import BackgroundTasks
from agents.senders import Senders
from streams.delivery import Send
from streams.machine import Input, TxnFailed, TxnSucceeded
from streams.matrix import AppserviceID, TxnID
from streams.outcome import Delivered, Outcome
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
