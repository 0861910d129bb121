"""The input envelope's kinds and who receives each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from streams import envelope
from streams.errors import BadRecord
from streams.interest import Interest, RoomView
from streams.machine import ItemKind
from streams.matrix import RoomID
from streams.registration import parse_registration
from streams.routing import recipients
from streams.transaction import build_body, merge_device_data

HS = "example.org"


def registration(appservice_id: str, **flags: Any) -> Any:
    doc = {
        "id": appservice_id,
        "url": "http://127.0.0.1:9",
        "as_token": f"as-{appservice_id}",
        "hs_token": "hs",
        "sender_localpart": f"{appservice_id}bot",
        "namespaces": {"users": [{"regex": f"@{appservice_id}_.*", "exclusive": True}], "rooms": [], "aliases": []},
        **flags,
    }
    return parse_registration(doc, Path(f"{appservice_id}.yaml"))


PLAIN = registration("plain")
EPHEMERAL = registration("eph", receive_ephemeral=True)
UNSTABLE = registration("old", **{"de.sorunome.msc2409.push_ephemeral": True})
CRYPTO = registration("crypto", **{"org.matrix.msc3202": True})
INTEREST = Interest([PLAIN, EPHEMERAL, UNSTABLE, CRYPTO], HS)


def decode(kind: str, **fields: Any) -> envelope.Envelope:
    return envelope.decode(envelope.encode(kind, **fields))


def room_with(*members: str) -> RoomView:
    return RoomView(RoomID("!r:example.org"), frozenset(), frozenset(members))


@pytest.mark.parametrize(
    "kind,fields,field",
    [
        ("ephemeral", {"edu": {"type": "m.typing", "content": {}}}, "edu.room_id"),
        ("ephemeral", {"edu": {"type": "m.presence", "content": {}}}, "edu.sender"),
        ("ephemeral", {"edu": {"type": "m.fully_read", "room_id": "!r", "content": {}}}, "edu.type"),
        ("ephemeral", {"edu": {"type": "m.typing", "room_id": "!r"}}, "edu.content"),
        (
            "to_device",
            {"message": {"type": "x", "sender": "@a", "to_user_id": "@b", "content": {}}},
            "message.to_device_id",
        ),
        ("device_lists", {"user_id": "@a:hs", "change": "gone"}, "change"),
        ("device_keys", {"user_id": "@a:hs", "device_id": "D"}, "one_time_keys_count"),
        (
            "device_keys",
            {"user_id": "@a:hs", "device_id": "D", "one_time_keys_count": {"x": "1"}},
            "one_time_keys_count",
        ),
        ("nonsense", {}, "kind"),
    ],
)
def test_bad_envelopes_name_the_field(kind: str, fields: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRecord) as raised:
        decode(kind, **fields)
    assert raised.value.field == field


def test_records_are_keyed_by_room_or_user() -> None:
    typing = decode("ephemeral", edu={"type": "m.typing", "room_id": "!r:hs", "content": {"user_ids": []}})
    presence = decode("ephemeral", edu={"type": "m.presence", "sender": "@a:hs", "content": {}})
    message = {"type": "t", "sender": "@a:hs", "to_user_id": "@b:hs", "to_device_id": "D", "content": {}}
    to_device = decode("to_device", message=message)
    keys = decode("device_keys", user_id="@c:hs", device_id="D", one_time_keys_count={"x": 1})
    assert [envelope.record_key(r) for r in (typing, presence, to_device, keys)] == ["!r:hs", "@a:hs", "@b:hs", "@c:hs"]


def test_typing_goes_to_ephemeral_appservices_interested_in_the_room() -> None:
    record = decode("ephemeral", edu={"type": "m.typing", "room_id": "!r:example.org", "content": {"user_ids": []}})
    assert isinstance(record, (envelope.Ephemeral))
    delivery = recipients(
        record, room_with("@eph_x:example.org", "@old_y:example.org", "@plain_z:example.org"), INTEREST
    )
    assert delivery.kind is ItemKind.EPHEMERAL
    assert delivery.appservices == ("eph", "old")


def test_typing_in_a_room_nobody_is_interested_in_goes_nowhere() -> None:
    record = decode("ephemeral", edu={"type": "m.receipt", "room_id": "!r:example.org", "content": {}})
    assert isinstance(record, envelope.Ephemeral)
    assert recipients(record, room_with("@someone:example.org"), INTEREST).appservices == ()


def test_presence_goes_to_ephemeral_appservices_interested_in_the_user() -> None:
    record = decode("ephemeral", edu={"type": "m.presence", "sender": "@eph_x:example.org", "content": {}})
    assert isinstance(record, envelope.Ephemeral)
    assert recipients(record, None, INTEREST).appservices == ("eph",)


def test_to_device_goes_to_the_appservice_of_the_recipient_whatever_its_flags() -> None:
    message = {
        "type": "m.x",
        "sender": "@a:hs",
        "to_user_id": "@plain_b:example.org",
        "to_device_id": "D",
        "content": {},
    }
    record = decode("to_device", message=message)
    assert isinstance(record, envelope.ToDevice)
    delivery = recipients(record, None, INTEREST)
    assert (delivery.kind, delivery.appservices) == (ItemKind.TO_DEVICE, ("plain",))
    assert orjson.loads(delivery.payload)["to_device_id"] == "D"


def test_to_device_for_the_appservice_user_itself() -> None:
    message = {
        "type": "m.x",
        "sender": "@a:hs",
        "to_user_id": "@plainbot:example.org",
        "to_device_id": "D",
        "content": {},
    }
    record = decode("to_device", message=message)
    assert isinstance(record, envelope.ToDevice)
    assert recipients(record, None, INTEREST).appservices == ("plain",)


def test_device_data_goes_only_to_msc3202_appservices() -> None:
    for user in ("@crypto_a:example.org", "@plain_a:example.org"):
        record = decode("device_lists", user_id=user, change="changed")
        assert isinstance(record, envelope.DeviceData)
        expected = ("crypto",) if user.startswith("@crypto") else ()
        assert recipients(record, None, INTEREST).appservices == expected


def device(kind: str, **fields: Any) -> bytes:
    record = decode(kind, **fields)
    assert isinstance(record, envelope.DeviceData)
    return record.payload


def test_a_later_left_wins_over_an_earlier_changed_and_the_reverse() -> None:
    summary = merge_device_data(
        [
            device("device_lists", user_id="@a:hs", change="changed"),
            device("device_lists", user_id="@b:hs", change="left"),
            device("device_lists", user_id="@a:hs", change="left"),
            device("device_lists", user_id="@b:hs", change="changed"),
        ]
    )
    assert summary == {"org.matrix.msc3202.device_lists": {"changed": ["@b:hs"], "left": ["@a:hs"]}}


def test_latest_key_counts_of_a_device_win_and_are_sent_under_both_names() -> None:
    summary = merge_device_data(
        [
            device("device_keys", user_id="@a:hs", device_id="D", one_time_keys_count={"curve": 5}),
            device("device_keys", user_id="@a:hs", device_id="D", one_time_keys_count={"curve": 3}),
            device("device_keys", user_id="@a:hs", device_id="E", unused_fallback_key_types=["curve"]),
        ]
    )
    assert summary == {
        "org.matrix.msc3202.device_one_time_keys_count": {"@a:hs": {"D": {"curve": 3}}},
        "org.matrix.msc3202.device_one_time_key_counts": {"@a:hs": {"D": {"curve": 3}}},
        "org.matrix.msc3202.device_unused_fallback_key_types": {"@a:hs": {"E": ["curve"]}},
    }


def test_a_body_without_device_data_has_no_msc3202_keys() -> None:
    assert set(orjson.loads(build_body([b"{}"]))) == {"events"}
