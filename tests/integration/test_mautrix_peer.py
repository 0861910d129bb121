"""A real appservice library nobody here wrote receives our transactions: mautrix-python."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from mautrix.appservice import AppService
from mautrix.types import Event

from agents.producer import EventProducer
from tests.integration.events import message
from tests.support.worker_process import WorkerProcess, write_registration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
