"""Synapse's tables the feed module reads, in an in-memory SQLite (the columns it uses), and stored PDUs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

ROOM = "!r:hs"
SCHEMA = """
CREATE TABLE events(stream_ordering INTEGER PRIMARY KEY, event_id TEXT, room_id TEXT, type TEXT);
CREATE TABLE event_json(event_id TEXT, room_id TEXT, internal_metadata TEXT, json TEXT);
CREATE TABLE rejections(event_id TEXT, reason TEXT, last_check TEXT);
CREATE TABLE redactions(event_id TEXT, redacts TEXT, have_censored BOOL, received_ts BIGINT);
CREATE TABLE local_current_membership(room_id TEXT, user_id TEXT, event_id TEXT, membership TEXT);
CREATE TABLE room_aliases(room_alias TEXT, room_id TEXT, creator TEXT);
"""


@contextmanager
def synapse_tables() -> Iterator[sqlite3.Cursor]:
    connection = sqlite3.connect(":memory:")
    try:
        cursor = connection.cursor()
        cursor.executescript(SCHEMA)
        yield cursor
    finally:
        connection.close()


def pdu(event_type: str = "m.room.message", **extra: Any) -> dict[str, Any]:
    doc = {
        "type": event_type,
        "room_id": ROOM,
        "sender": "@a:hs",
        "origin_server_ts": 1000,
        "content": {"body": "hi", "msgtype": "m.text"},
        "depth": 3,
        "auth_events": ["$x"],
        "prev_events": ["$y"],
        "hashes": {"sha256": "h"},
        "signatures": {"hs": {}},
        "unsigned": {"age_ts": 900},
    }
    doc.update(extra)
    return doc


def insert(db: sqlite3.Cursor, ordering: int, event_id: str, doc: dict[str, Any]) -> None:
    """An event as Synapse stores it: a row of ``events`` and one of ``event_json``."""
    db.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (ordering, event_id, ROOM, doc["type"]))
    db.execute("INSERT INTO event_json VALUES (?, ?, '{}', ?)", (event_id, ROOM, json.dumps(doc)))
