"""A send that breaks inside the worker becomes a failed attempt, never a stall."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agents.background import BackgroundTasks
from agents.deliverer import Senders
from streams.delivery import Send
from streams.machine import TxnFailed, TxnSucceeded
from streams.matrix import AppserviceID, TxnID
from streams.outcome import Delivered, Outcome
from streams.records import decode_inbox
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


class Inbox:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    async def send(self, *, key: bytes, value: bytes) -> None:
        self.records.append((key, value))


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
        registrations={AppserviceID("bridge"): REGISTRATION}, client=client, inbox=Inbox(), background=BackgroundTasks()
    )


SEND = Send(AppserviceID("bridge"), TxnID(7), 0, b'{"events":[]}')


async def test_an_exception_while_sending_is_reported_as_a_failed_attempt() -> None:
    shell = pipeline(Client(RuntimeError("bug")))
    Senders(shell).start(SEND)
    await asyncio.sleep(0.1)
    [(key, value)] = shell.inbox.records
    result = decode_inbox(value)
    assert key == b"bridge"
    assert isinstance(result, TxnFailed) and result.txn_id == 7 and "RuntimeError" in result.reason


async def test_a_txn_already_on_the_wire_is_not_sent_twice_by_one_worker() -> None:
    client = Client(Delivered(200))
    shell = pipeline(client)
    senders = Senders(shell)
    senders.start(SEND)
    senders.start(SEND)  # a Resume while the first attempt is in flight
    await asyncio.sleep(0.1)
    assert client.calls == 1
    assert [type(decode_inbox(v)) for _, v in shell.inbox.records] == [TxnSucceeded]
