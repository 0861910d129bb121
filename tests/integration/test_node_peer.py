"""A real appservice library nobody here wrote receives our transactions: npm ``matrix-appservice`` 3.0.0.

The library (``AppService.onTransaction``) emits ``event`` per entry of
``events`` and ``ephemeral`` per entry of ``de.sorunome.msc2409.ephemeral``
only: it ignores the stable ``ephemeral`` key and all to-device keys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agents.producer import EventProducer
from tests.integration.events import message
from tests.support.node_appservice import NodeAppservice
from tests.support.worker_process import WorkerProcess, write_registration

ROOM = "!room:example.org"
PUPPET = "@nodeas_x:example.org"


@pytest.fixture
async def node_appservice() -> AsyncIterator[NodeAppservice]:
    appservice = NodeAppservice(hs_token="hs-secret")
    await appservice.start()
    yield appservice
    appservice.stop()


async def test_npm_matrix_appservice_receives_events_in_order(
    registrations: Path, worker: WorkerProcess, producer: EventProducer, node_appservice: NodeAppservice
) -> None:
    write_registration(registrations, "nodeas", node_appservice.url)
    worker.start()
    for n in range(150):
        producer.send_event(message(n, sender=PUPPET))
    producer.flush()

    lines = await node_appservice.wait_for("event", 150, timeout_s=30)

    events = [line["event"] for line in lines]
    assert [e["event_id"] for e in events] == [f"$event{n}:example.org" for n in range(150)]
    assert events[0]["content"]["body"] == "message 0"
    assert events[0]["room_id"] == ROOM
    assert events[0]["sender"] == PUPPET
    assert node_appservice.of_kind("ephemeral") == []
    assert len(node_appservice.of_kind("event")) == 150  # nothing delivered twice


async def test_npm_matrix_appservice_receives_ephemeral_events(
    registrations: Path, worker: WorkerProcess, producer: EventProducer, node_appservice: NodeAppservice
) -> None:
    write_registration(registrations, "nodeas", node_appservice.url, **{"de.sorunome.msc2409.push_ephemeral": True})
    worker.start()
    join: dict[str, Any] = {
        "event_id": "$join",
        "type": "m.room.member",
        "sender": PUPPET,
        "state_key": PUPPET,
        "room_id": ROOM,
        "origin_server_ts": 1,
        "content": {"membership": "join"},
    }
    producer.send_event(join)
    producer.flush()
    # The join is itself an event for the AS (its user sent it); once delivered, the room is interesting.
    (joined,) = await node_appservice.wait_for("event", 1, timeout_s=30)
    assert joined["event"]["event_id"] == "$join"

    producer.send_ephemeral({"type": "m.typing", "room_id": ROOM, "content": {"user_ids": [PUPPET]}})
    producer.flush()

    (line,) = await node_appservice.wait_for("ephemeral", 1, timeout_s=30)
    typing = line["event"]
    assert typing["type"] == "m.typing"
    assert typing["room_id"] == ROOM
    assert typing["content"]["user_ids"] == [PUPPET]
