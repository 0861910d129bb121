"""The input envelope: what homeserver producers write to ``matrix.events``.

Version 1, one JSON object per Kafka record, key = the room ID (UTF-8), so
every record of one room lands on one partition, in order. Kinds:

``event``         ``{"v": 1, "kind": "event", "event": {<client-format event>}}``
                  ``event`` needs string ``event_id``, ``type``, ``sender``,
                  ``room_id``; everything else is passed to appservices as is.
``room_aliases``  ``{"v": 1, "kind": "room_aliases", "room_id": "!r:hs",
                  "aliases": ["#a:hs", …]}``: the room's *local* aliases now
                  (replaces what was known), used by the ``aliases`` namespace.

Members are not declared: the router tracks local joined members from the
``m.room.member`` events themselves.
"""

from __future__ import annotations

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


Envelope = RoomEvent | RoomAliases


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
    if kind == "room_aliases":
        room_id = doc.get("room_id")
        aliases = doc.get("aliases")
        if not isinstance(room_id, str):
            raise BadRecord("missing or not a string", field="room_id")
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise BadRecord("must be a list of strings", field="aliases")
        return RoomAliases(RoomID(room_id), frozenset(aliases))
    raise BadRecord(f"unknown kind {kind!r}", field="kind")


def encode_event(event: dict[str, Any]) -> bytes:
    """The envelope for one client-format room event."""
    return orjson.dumps({"v": VERSION, "kind": "event", "event": event})


def encode_room_aliases(room_id: str, aliases: list[str]) -> bytes:
    return orjson.dumps({"v": VERSION, "kind": "room_aliases", "room_id": room_id, "aliases": aliases})
