"""Client-format Matrix events for tests."""

from __future__ import annotations

from typing import Any


def message(n: int, sender: str = "@bridge_alice:example.org", room: str = "!room:example.org") -> dict[str, Any]:
    return {
        "event_id": f"$event{n}:example.org",
        "type": "m.room.message",
        "sender": sender,
        "room_id": room,
        "origin_server_ts": 1_700_000_000_000 + n,
        "content": {"msgtype": "m.text", "body": f"message {n}"},
    }


def numbers(events: list[dict[str, Any]]) -> list[int]:
    return [int(e["event_id"][len("$event") :].split(":")[0]) for e in events]
