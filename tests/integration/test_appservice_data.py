"""Ephemeral data, to-device messages and MSC3202 device data, end to end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.producer import EventProducer
from tests.integration.events import message, numbers
from tests.support.recording_appservice import Received, RecordingAppservice
from tests.support.worker_process import WorkerProcess, write_registration

Factory = Callable[[], RecordingAppservice]
ROOM = "!room:example.org"
BRIDGE_ROOMS: dict[str, Any] = {
    "users": [{"regex": "@bridge_.*:example.org", "exclusive": True}],
    "aliases": [],
    "rooms": [{"regex": "!room:.*", "exclusive": False}],
}


async def bridge(factory: Factory, registrations: Path, **flags: Any) -> RecordingAppservice:
    appservice = factory()
    await appservice.start()
    write_registration(registrations, "bridge", appservice.url, namespaces=BRIDGE_ROOMS, **flags)
    return appservice


def typing(n: int) -> dict[str, Any]:
    return {"type": "m.typing", "room_id": ROOM, "content": {"user_ids": [f"@bridge_{n}:example.org"]}}


def to_device(n: int) -> dict[str, Any]:
    return {
        "type": "m.room_key_request",
        "sender": "@alice:example.org",
        "to_user_id": "@bridge_bob:example.org",
        "to_device_id": "BRIDGEDEVICE",
        "content": {"n": n},
    }


def sizes(received: Received) -> tuple[int, int, int]:
    body = received.document
    return (len(body["events"]), len(body.get("ephemeral", [])), len(body.get("to_device", [])))


async def test_150_of_each_kind_queued_at_once_go_out_as_100_100_100_then_50_50_50(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess, producer: EventProducer
) -> None:
    appservice = await bridge(appservice_factory, registrations, receive_ephemeral=True)
    worker.start()
    appservice.hold()
    producer.send_event(message(0))
    producer.flush()
    await appservice.wait_for_requests(1)
    for n in range(1, 151):
        producer.send_event(message(n))
        producer.send_ephemeral(typing(n))
        producer.send_to_device(to_device(n))
    producer.flush()
    await asyncio.sleep(2.0)
    appservice.release()
    requests = await appservice.wait_for_requests(3)
    assert [sizes(r) for r in requests] == [(1, 0, 0), (100, 100, 100), (50, 50, 50)]
    body = requests[1].document
    assert body["to_device"] == body["de.sorunome.msc2409.to_device"]
    assert "de.sorunome.msc2409.ephemeral" not in body  # only the stable name was asked for
    assert [e["content"]["n"] for r in requests[1:] for e in r.document["to_device"]] == list(range(1, 151))


async def test_msc2409_registrations_get_the_unstable_ephemeral_key(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess, producer: EventProducer
) -> None:
    appservice = await bridge(appservice_factory, registrations, **{"de.sorunome.msc2409.push_ephemeral": True})
    worker.start()
    producer.send_ephemeral(typing(1))
    producer.flush()
    [request] = await appservice.wait_for_requests(1)
    assert request.document == {"events": [], "de.sorunome.msc2409.ephemeral": [typing(1)]}


async def test_appservices_without_ephemeral_flags_get_no_ephemeral_data(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess, producer: EventProducer
) -> None:
    appservice = await bridge(appservice_factory, registrations)
    worker.start()
    producer.send_ephemeral(typing(1))
    producer.send_event(message(2))
    producer.flush()
    await appservice.wait_for_events(1)
    await asyncio.sleep(0.5)
    assert [r.document for r in appservice.requests] == [{"events": [message(2)]}]


async def test_device_list_changes_merge_into_one_summary(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess, producer: EventProducer
) -> None:
    appservice = await bridge(appservice_factory, registrations, **{"org.matrix.msc3202": True})
    worker.start()
    appservice.hold()
    producer.send_event(message(0))
    producer.flush()
    await appservice.wait_for_requests(1)
    a, b = "@bridge_a:example.org", "@bridge_b:example.org"
    # Same user, same partition, so these arrive in this order.
    producer.send_device_list_change(a, "changed")
    producer.send_device_list_change(a, "left")
    producer.send_device_list_change(b, "left")
    producer.send_device_list_change(b, "changed")
    producer.send_device_keys(a, "DEV", {"signed_curve25519": 9}, ["signed_curve25519"])
    producer.send_device_keys(a, "DEV", {"signed_curve25519": 8})
    producer.send_device_list_change("@stranger:example.org", "changed")  # not the bridge's user
    producer.flush()
    await asyncio.sleep(1.5)
    appservice.release()
    requests = await appservice.wait_for_requests(2)
    body = requests[1].document
    assert body["org.matrix.msc3202.device_lists"] == {"changed": [b], "left": [a]}
    assert body["org.matrix.msc3202.device_one_time_keys_count"] == {a: {"DEV": {"signed_curve25519": 8}}}
    assert body["org.matrix.msc3202.device_one_time_key_counts"] == {a: {"DEV": {"signed_curve25519": 8}}}
    assert body["org.matrix.msc3202.device_unused_fallback_key_types"] == {a: {"DEV": ["signed_curve25519"]}}
    assert "org.matrix.msc3202.device_lists" not in requests[0].document


async def test_a_retried_txn_carries_exactly_its_first_body_with_ephemeral_and_to_device(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess, producer: EventProducer
) -> None:
    appservice = await bridge(appservice_factory, registrations, receive_ephemeral=True)
    appservice.fail_matching(lambda r: "ephemeral" in r.document, times=2)
    worker.start()
    appservice.hold()
    producer.send_event(message(0))
    producer.flush()
    await appservice.wait_for_requests(1)
    producer.send_event(message(1))
    producer.send_ephemeral(typing(1))
    producer.send_to_device(to_device(1))
    producer.flush()
    await asyncio.sleep(1.5)
    appservice.release()
    requests = await appservice.wait_for_requests(4)
    retried = requests[1:4]
    assert len({(r.txn_id, r.body) for r in retried}) == 1, "every attempt of a txn has the same id and bytes"
    assert sizes(retried[0]) == (1, 1, 1)


async def test_ephemeral_and_to_device_are_parked_while_down_and_delivered_after(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess, producer: EventProducer
) -> None:
    appservice = await bridge(appservice_factory, registrations, receive_ephemeral=True)
    appservice.fail_next(4)  # ~3 s of outage at a 100 ms retry unit
    worker.start()
    producer.send_event(message(0))
    producer.flush()
    await appservice.wait_for_requests(1)
    for n in range(1, 4):
        producer.send_ephemeral(typing(n))
        producer.send_to_device(to_device(n))
        producer.send_event(message(n))
    producer.flush()
    requests = await appservice.wait_for_requests(6, timeout_s=20)
    delivered = appservice.delivered()
    assert numbers(appservice.delivered_events()) == [0, 1, 2, 3]
    assert len(delivered) == 2, "the parked items go in one transaction after the outage"
    assert sizes(delivered[1]) == (3, 3, 3)
    assert [e["content"]["user_ids"] for e in delivered[1].document["ephemeral"]] == [
        [f"@bridge_{n}:example.org"] for n in range(1, 4)
    ]
    assert len(requests) == 6


async def test_legacy_authorization_adds_the_access_token_query_parameter(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess, producer: EventProducer
) -> None:
    appservice = await bridge(appservice_factory, registrations)
    worker.extra_env["APPSERVICE_STREAMS_LEGACY_AUTHORIZATION"] = "true"
    worker.start()
    producer.send_event(message(1))
    producer.flush()
    [request] = await appservice.wait_for_requests(1)
    assert request.query == {"access_token": "hs-secret"}
    assert request.authorization == "Bearer hs-secret"
