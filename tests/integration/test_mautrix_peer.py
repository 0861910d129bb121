"""A real appservice library nobody here wrote receives our transactions: mautrix-python."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mautrix.appservice import AppService
from mautrix.types import Event

from agents.producer import EventProducer
from tests.integration.events import message
from tests.support.worker_process import WorkerProcess, free_port, write_registration


async def test_mautrix_appservice_receives_events_in_order(
    registrations: Path, worker: WorkerProcess, producer: EventProducer
) -> None:
    port = free_port()
    appservice = AppService(
        server="http://127.0.0.1:9",  # the homeserver API is not used here
        domain="example.org",
        as_token="as-mautrix",
        hs_token="hs-secret",
        bot_localpart="mautrixbot",
        id="mautrix",
    )
    appservice.synchronous_handlers = True
    received: list[Event] = []
    arrived = asyncio.Event()

    @appservice.matrix_event_handler
    async def on_event(event: Event) -> None:
        received.append(event)
        if len(received) >= 150:
            arrived.set()

    await appservice.start("127.0.0.1", port)
    try:
        write_registration(registrations, "mautrix", f"http://127.0.0.1:{port}", sender_localpart="mautrixbot")
        worker.start()
        for n in range(150):
            producer.send_event(message(n, sender="@mautrix_puppet:example.org"))
        producer.flush()
        await asyncio.wait_for(arrived.wait(), 30)
    finally:
        await appservice.stop()
    assert [str(e.event_id) for e in received] == [f"$event{n}:example.org" for n in range(150)]
    assert received[0].content["body"] == "message 0"
    assert str(received[0].room_id) == "!room:example.org"


async def test_mautrix_appservice_receives_ephemeral_and_to_device(
    registrations: Path, worker: WorkerProcess, producer: EventProducer
) -> None:
    port = free_port()
    appservice = AppService(
        server="http://127.0.0.1:9",
        domain="example.org",
        as_token="as-mautrix",
        hs_token="hs-secret",
        bot_localpart="mautrixbot",
        id="mautrix",
        ephemeral_events=True,
        encryption_events=True,
    )
    appservice.synchronous_handlers = True
    ephemeral: list[Any] = []
    to_device: list[Any] = []
    both = asyncio.Event()

    @appservice.matrix_event_handler
    async def on_event(event: Any) -> None:
        ephemeral.append(event)  # only EDUs are produced in this test
        if ephemeral and to_device:
            both.set()

    async def on_to_device(event: Any) -> None:
        to_device.append(event)
        if ephemeral and to_device:
            both.set()

    appservice.to_device_handler = on_to_device
    await appservice.start("127.0.0.1", port)
    try:
        write_registration(
            registrations,
            "mautrix",
            f"http://127.0.0.1:{port}",
            sender_localpart="mautrixbot",
            receive_ephemeral=True,
            namespaces={
                "users": [{"regex": "@mautrix_.*:example.org", "exclusive": True}],
                "aliases": [],
                "rooms": [{"regex": "!room:example.org", "exclusive": False}],
            },
        )
        worker.start()
        producer.send_ephemeral(
            {"type": "m.typing", "room_id": "!room:example.org", "content": {"user_ids": ["@mautrix_a:example.org"]}}
        )
        producer.send_to_device(
            {
                "type": "m.room_key_request",
                "sender": "@alice:example.org",
                "to_user_id": "@mautrix_puppet:example.org",
                "to_device_id": "PUPPETDEVICE",
                "content": {"action": "request_cancellation", "request_id": "r1", "requesting_device_id": "D"},
            }
        )
        producer.flush()
        await asyncio.wait_for(both.wait(), 30)
    finally:
        await appservice.stop()
    assert ephemeral[0].type.t == "m.typing" and str(ephemeral[0].room_id) == "!room:example.org"
    assert [str(u) for u in ephemeral[0].content.user_ids] == ["@mautrix_a:example.org"]
    assert str(to_device[0].to_user_id) == "@mautrix_puppet:example.org"
    assert str(to_device[0].to_device_id) == "PUPPETDEVICE"
