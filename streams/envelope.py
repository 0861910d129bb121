"""The input envelope: what homeserver producers write to ``matrix.events``.

Version 1, one JSON object per Kafka record, key = the room ID (UTF-8), so
every record of one room lands on one partition, in order. Kinds:

``event``         ``{"v": 1, "kind": "event", "event": {<client-format event>}}``
                  ``event`` needs string ``event_id``, ``type``, ``sender``,
                  ``room_id``; everything else is passed to appservices as is.
``room_aliases``  ``{"v": 1, "kind": "room_aliases", "room_id": "!r:hs",
                  "aliases": ["#a:hs", …]}``: the room's *local* aliases now
                  (replaces what was known), used by the ``aliases`` namespace.
``room_members``  ``{"v": 1, "kind": "room_members", "room_id": "!r:hs",
                  "members": ["@u:hs", …]}``: the room's *local joined* members
                  now (replaces what was known): a homeserver's snapshot at
                  cold start, so interest rule 5 holds from the first event.

``ephemeral``      ``{"v": 1, "kind": "ephemeral", "edu": {"type": "m.typing" |
                  "m.receipt", "room_id": …, "content": {…}}}`` (key = room ID) or
                  ``{"type": "m.presence", "sender": "@u:hs", "content": {…}}``
                  (key = user ID).
``to_device``     ``{"v": 1, "kind": "to_device", "message": {"type", "sender",
                  "to_user_id", "to_device_id", "content"}}`` (key = recipient).
``device_lists``  ``{"v": 1, "kind": "device_lists", "user_id": "@u:hs",
                  "change": "changed" | "left"}`` (key = user ID; MSC3202).
``device_keys``   ``{"v": 1, "kind": "device_keys", "user_id", "device_id",
                  "one_time_keys_count": {"signed_curve25519": 50},
                  "unused_fallback_key_types": ["signed_curve25519"]}``
                  (key = user ID; MSC3202; either field may be omitted).

Between snapshots the router tracks local joined members from the
``m.room.member`` events themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from streams.errors import BadRecord
from streams.matrix import RoomID

VERSION = 1
REQUIRED_EVENT_FIELDS = ("event_id", "type", "sender", "room_id")


@dataclass(frozen=True)
class RoomEvent:
    event: dict[str, Any]
    payload: bytes  # the event as JSON, exactly as appservices will get it

    @property
    def room_id(self) -> RoomID:
        return RoomID(self.event["room_id"])


@dataclass(frozen=True)
class RoomAliases:
    room_id: RoomID
    aliases: frozenset[str]


ROOM_EDUS = ("m.typing", "m.receipt")
PRESENCE = "m.presence"


@dataclass(frozen=True)
class Ephemeral:
    """A typing or receipt EDU (``room_id`` set) or a presence EDU (``user_id`` set)."""

    edu_type: str
    room_id: RoomID | None
    user_id: str | None
    payload: bytes


@dataclass(frozen=True)
class ToDevice:
    to_user_id: str
    payload: bytes


@dataclass(frozen=True)
class DeviceData:
    """A device-list change or a key-count update of one user (MSC3202)."""

    user_id: str
    # {"user", "lists": "changed"|"left"} or {"user", "device", "otk": {…}|null, "fallback": […]|null}
    payload: bytes


@dataclass(frozen=True)
class RoomMembers:
    room_id: RoomID
    members: frozenset[str]


Envelope = RoomEvent | RoomAliases | RoomMembers | Ephemeral | ToDevice | DeviceData


def record_key(record: Envelope) -> str:
    """The input topic key: a room's records share a partition, so do a user's."""
    if isinstance(record, (RoomEvent, RoomAliases, RoomMembers)):
        return record.room_id
    if isinstance(record, Ephemeral):
        return record.room_id or record.user_id or ""
    return record.to_user_id if isinstance(record, ToDevice) else record.user_id


def _string(doc: dict[str, Any], name: str, prefix: str = "") -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise BadRecord("missing or not a string", field=prefix + name)
    return value


def _object(doc: dict[str, Any], name: str, prefix: str = "") -> dict[str, Any]:
    value = doc.get(name)
    if not isinstance(value, dict):
        raise BadRecord("missing or not a JSON object", field=prefix + name)
    return value


def _decode_ephemeral(doc: dict[str, Any]) -> Ephemeral:
    edu = _object(doc, "edu")
    edu_type = _string(edu, "type", "edu.")
    _object(edu, "content", "edu.")
    if edu_type in ROOM_EDUS:
        return Ephemeral(edu_type, RoomID(_string(edu, "room_id", "edu.")), None, orjson.dumps(edu))
    if edu_type == PRESENCE:
        return Ephemeral(edu_type, None, _string(edu, "sender", "edu."), orjson.dumps(edu))
    raise BadRecord(f"unsupported EDU type {edu_type!r}, expected m.typing, m.receipt or m.presence", field="edu.type")


def _decode_to_device(doc: dict[str, Any]) -> ToDevice:
    message = _object(doc, "message")
    for name in ("type", "sender", "to_user_id", "to_device_id"):
        _string(message, name, "message.")
    _object(message, "content", "message.")
    return ToDevice(message["to_user_id"], orjson.dumps(message))


def _decode_device_lists(doc: dict[str, Any]) -> DeviceData:
    user_id = _string(doc, "user_id")
    change = doc.get("change")
    if change not in ("changed", "left"):
        raise BadRecord("must be 'changed' or 'left'", field="change")
    return DeviceData(user_id, orjson.dumps({"user": user_id, "lists": change}))


def _decode_device_keys(doc: dict[str, Any]) -> DeviceData:
    user_id = _string(doc, "user_id")
    device_id = _string(doc, "device_id")
    otk = doc.get("one_time_keys_count")
    fallback = doc.get("unused_fallback_key_types")
    if otk is None and fallback is None:
        raise BadRecord("needs one_time_keys_count or unused_fallback_key_types", field="one_time_keys_count")
    if otk is not None and (
        not isinstance(otk, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in otk.items())
    ):
        raise BadRecord("must map algorithm names to integers", field="one_time_keys_count")
    if fallback is not None and (not isinstance(fallback, list) or not all(isinstance(f, str) for f in fallback)):
        raise BadRecord("must be a list of strings", field="unused_fallback_key_types")
    return DeviceData(user_id, orjson.dumps({"user": user_id, "device": device_id, "otk": otk, "fallback": fallback}))


def decode(raw: bytes | None) -> Envelope:
    """Parse one input record.

    Raises:
        BadRecord: not JSON, an unknown version or kind, or a missing or
            mistyped field; the message names the field.
    """
    if raw is None:
        raise BadRecord("record has no value")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRecord(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadRecord("envelope is not a JSON object")
    if doc.get("v") != VERSION:
        raise BadRecord(f"unsupported envelope version {doc.get('v')!r}, expected {VERSION}", field="v")
    kind = doc.get("kind")
    if kind == "event":
        event = doc.get("event")
        if not isinstance(event, dict):
            raise BadRecord("must be a JSON object", field="event")
        for name in REQUIRED_EVENT_FIELDS:
            if not isinstance(event.get(name), str):
                raise BadRecord("missing or not a string", field=f"event.{name}")
        return RoomEvent(event, orjson.dumps(event))
    if kind in ("room_aliases", "room_members"):
        room_id = doc.get("room_id")
        name = "aliases" if kind == "room_aliases" else "members"
        listed = doc.get(name)
        if not isinstance(room_id, str):
            raise BadRecord("missing or not a string", field="room_id")
        if not isinstance(listed, list) or not all(isinstance(a, str) for a in listed):
            raise BadRecord("must be a list of strings", field=name)
        if kind == "room_aliases":
            return RoomAliases(RoomID(room_id), frozenset(listed))
        return RoomMembers(RoomID(room_id), frozenset(listed))
    decoder = _DECODERS.get(kind) if isinstance(kind, str) else None
    if decoder is None:
        raise BadRecord(f"unknown kind {kind!r}", field="kind")
    return decoder(doc)


_DECODERS: dict[str, Callable[[dict[str, Any]], Envelope]] = {
    "ephemeral": _decode_ephemeral,
    "to_device": _decode_to_device,
    "device_lists": _decode_device_lists,
    "device_keys": _decode_device_keys,
}


def encode(kind: str, **fields: Any) -> bytes:
    """Any envelope: ``encode("ephemeral", edu={…})``, ``encode("to_device", message={…})`` …"""
    return orjson.dumps({"v": VERSION, "kind": kind, **fields})
