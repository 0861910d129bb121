"""The router's room state (local members) survives a restart, warm or rebuilt from its changelog."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from agents.producer import EventProducer
from tests.integration.events import message, numbers
from tests.integration.test_delivery import Factory, started
from tests.support.worker_process import WorkerProcess


def joins(n: int, user: str, room: str) -> dict[str, Any]:
    return {
        **message(n, sender=user, room=room),
        "type": "m.room.member",
        "state_key": user,
        "content": {"membership": "join"},
    }


@pytest.mark.parametrize("wipe_state", [False, True], ids=["warm-state", "state-rebuilt-from-changelog"])
async def test_a_room_joined_before_a_restart_still_interests_the_appservice_after_it(
    appservice_factory: Factory,
    registrations: Path,
    worker: WorkerProcess,
    producer: EventProducer,
    wipe_state: bool,
) -> None:
    bridge = await started(appservice_factory, registrations, "bridge")
    worker.start()
    producer.send_event(joins(1, "@bridge_alice:example.org", "!joined:example.org"))
    producer.send_event(message(2, sender="@stranger:example.org", room="!joined:example.org"))
    producer.send_event(message(3, sender="@stranger:example.org", room="!other:example.org"))
    producer.flush()
    await bridge.wait_for_events(2)
    worker.kill()
    if wipe_state:
        shutil.rmtree(worker.data_dir)
    worker.start()
    # Rule 5 only: the sender is nobody's; the room's local member is the bridge's.
    producer.send_event(message(4, sender="@stranger:example.org", room="!joined:example.org"))
    producer.send_event(message(5, sender="@stranger:example.org", room="!other:example.org"))
    producer.flush()
    await bridge.wait_for_events(3)
    await asyncio.sleep(0.5)  # anything extra would have arrived by now
    assert numbers(bridge.delivered_events()) == [1, 2, 4]
