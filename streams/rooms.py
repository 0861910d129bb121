"""What the router remembers about a room: its local aliases and local joined members.

Rule 4 and 5 of appservice interest need them, and the input stream is the
only source: members are tracked from ``m.room.member`` events (and replaced whole by a
``room_members`` snapshot), aliases from ``room_aliases`` envelopes. Remote users are never kept (they never make a
room interesting). Stored as version-1 bytes: ``01`` + JSON
``{"a": [aliases], "m": [members]}``, both sorted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from streams.errors import InvariantBroken
from streams.interest import RoomView
from streams.matrix import MEMBER_EVENT, RoomID, is_local

V1 = 1


@dataclass(frozen=True)
class RoomState:
    aliases: frozenset[str] = frozenset()
    members: frozenset[str] = frozenset()

    def view(self, room_id: RoomID) -> RoomView:
        return RoomView(room_id, self.aliases, self.members)


def apply_event(room: RoomState, event: Mapping[str, object], server_name: str) -> RoomState:
    """The room after ``event``: a local user joining or leaving changes ``members``."""
    if event.get("type") != MEMBER_EVENT:
        return room
    user_id = event.get("state_key")
    content = event.get("content")
    if not isinstance(user_id, str) or not is_local(user_id, server_name) or not isinstance(content, dict):
        return room
    joined = content.get("membership") == "join"
    if joined == (user_id in room.members):
        return room
    members = room.members | {user_id} if joined else room.members - {user_id}
    return RoomState(room.aliases, members)


def with_aliases(room: RoomState, aliases: frozenset[str], server_name: str) -> RoomState:
    """The room with its local aliases replaced (remote aliases are dropped)."""
    return RoomState(frozenset(a for a in aliases if is_local(a, server_name)), room.members)


def with_members(room: RoomState, members: frozenset[str], server_name: str) -> RoomState:
    """The room with its local joined members replaced (a snapshot; remote users are dropped)."""
    return RoomState(room.aliases, frozenset(m for m in members if is_local(m, server_name)))


def encode_room(room: RoomState) -> bytes:
    return bytes((V1,)) + orjson.dumps({"a": sorted(room.aliases), "m": sorted(room.members)})


def decode_room(raw: bytes) -> RoomState:
    """Raises: InvariantBroken on an unknown version or malformed value."""
    if not raw or raw[0] != V1:
        raise InvariantBroken(f"unknown room state format {raw[:1]!r}")
    try:
        doc = orjson.loads(raw[1:])
        return RoomState(frozenset(doc["a"]), frozenset(doc["m"]))
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise InvariantBroken(f"malformed room state: {exc}") from exc
