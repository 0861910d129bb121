"""What the module reads from and writes to Synapse's database: one function per transaction body.

Each takes a DB-API cursor (Synapse's ``LoggingTransaction`` through
``ModuleApi.run_db_interaction``, or the backfill CLI's own connection) and
uses ``?`` placeholders, which Synapse converts for PostgreSQL.

Tables read (Synapse's schema, checked against 1.163): ``events``
(``stream_ordering``, ``event_id``, ``room_id``), ``event_json`` (``json``,
``internal_metadata``), ``rejections`` (rejected events are skipped, as
Synapse's ``get_events_as_list`` does), ``redactions``,
``local_current_membership``, ``room_aliases``. Table written: the module's
own ``appservice_streams_feed_position``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from appservice_streams_synapse.core import (
    Record,
    StoredEvent,
    aliases_record,
    changed_aliases,
    client_event,
    event_record,
    group,
    members_record,
    next_position,
)

POSITION_TABLE = "appservice_streams_feed_position"
CREATE_POSITION_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {POSITION_TABLE} (feed_id TEXT NOT NULL PRIMARY KEY, stream_ordering BIGINT NOT NULL)"
)
CANONICAL_ALIAS = "m.room.canonical_alias"

Cursor = Any  # a DB-API cursor: execute(sql, args), fetchall(), fetchone(), rowcount


@dataclass(frozen=True)
class Batch:
    position: int  # the stored position it was read after
    next_position: int  # where the feed stands once `records` are acknowledged
    records: list[Record]
    aliases_may_have_changed: bool  # it holds an m.room.canonical_alias event


def create_position_table(txn: Cursor) -> None:
    txn.execute(CREATE_POSITION_TABLE)


def read_position(txn: Cursor, feed_id: str) -> int | None:
    txn.execute(f"SELECT stream_ordering FROM {POSITION_TABLE} WHERE feed_id = ?", (feed_id,))
    row = txn.fetchone()
    return None if row is None else int(row[0])


def insert_position(txn: Cursor, feed_id: str, position: int) -> None:
    txn.execute(f"INSERT INTO {POSITION_TABLE} (feed_id, stream_ordering) VALUES (?, ?)", (feed_id, position))


def advance_position(txn: Cursor, feed_id: str, expected: int, position: int) -> bool:
    """Store ``position`` unless someone (a backfill) changed it since it was read; returns whether stored."""
    txn.execute(
        f"UPDATE {POSITION_TABLE} SET stream_ordering = ? WHERE feed_id = ? AND stream_ordering = ?",
        (position, feed_id, expected),
    )
    return bool(txn.rowcount == 1)


def set_position(txn: Cursor, feed_id: str, position: int) -> int | None:
    """The backfill's write: returns the position it replaced (None: the feed never started)."""
    old = read_position(txn, feed_id)
    if old is None:
        insert_position(txn, feed_id, position)
    else:
        txn.execute(f"UPDATE {POSITION_TABLE} SET stream_ordering = ? WHERE feed_id = ?", (position, feed_id))
    return old


def members_snapshot(txn: Cursor) -> dict[str, frozenset[str]]:
    """Every room's local joined members now (``local_current_membership`` holds local users only)."""
    txn.execute("SELECT room_id, user_id FROM local_current_membership WHERE membership = 'join'")
    return group((str(r), str(u)) for r, u in txn.fetchall())


def read_aliases(txn: Cursor) -> dict[str, frozenset[str]]:
    """Directory aliases (``room_aliases``: this server's own) per room."""
    txn.execute("SELECT room_id, room_alias FROM room_aliases")
    return group((str(r), str(a)) for r, a in txn.fetchall())


def start(txn: Cursor, feed_id: str) -> tuple[int | None, list[Record]]:
    """Create the position table; at a cold start (no position yet) also the members snapshot."""
    create_position_table(txn)
    position = read_position(txn, feed_id)
    if position is not None:
        return position, []
    return None, [members_record(room_id, members) for room_id, members in sorted(members_snapshot(txn).items())]


def _placeholders(values: list[str]) -> str:
    return ", ".join("?" for _ in values)


def _json_by_id(txn: Cursor, event_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not event_ids:
        return {}
    txn.execute(f"SELECT event_id, json FROM event_json WHERE event_id IN ({_placeholders(event_ids)})", event_ids)
    return {str(event_id): json.loads(doc) for event_id, doc in txn.fetchall()}


def _redactions(txn: Cursor, event_ids: list[str], now_ms: int) -> dict[str, StoredEvent]:
    """The (first, not rejected) redaction of each of ``event_ids`` that has one."""
    if not event_ids:
        return {}
    txn.execute(
        "SELECT r.redacts, e.stream_ordering, e.event_id, e.room_id, j.json, j.internal_metadata"
        " FROM redactions AS r JOIN events AS e ON e.event_id = r.event_id"
        " JOIN event_json AS j ON j.event_id = r.event_id"
        " LEFT JOIN rejections AS x ON x.event_id = r.event_id"
        f" WHERE x.event_id IS NULL AND r.redacts IN ({_placeholders(event_ids)})"
        " ORDER BY e.stream_ordering",
        event_ids,
    )
    found: dict[str, StoredEvent] = {}
    for redacts, ordering, event_id, room_id, doc, meta in txn.fetchall():
        found.setdefault(
            str(redacts), StoredEvent(int(ordering), str(event_id), str(room_id), json.loads(doc), json.loads(meta))
        )
    return found


def read_batch(txn: Cursor, feed_id: str, upto: int, limit: int, now_ms: int | None = None) -> Batch:
    """The next events after the stored position, up to ``upto``, as envelope records.

    Serialising here keeps the work in Synapse's database thread, off its reactor.
    """
    position = read_position(txn, feed_id)
    if position is None:
        raise LookupError(f"no position stored for feed {feed_id!r}")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    txn.execute(
        "SELECT e.stream_ordering, e.event_id, e.room_id, j.json, j.internal_metadata"
        " FROM events AS e JOIN event_json AS j ON j.event_id = e.event_id"
        " LEFT JOIN rejections AS x ON x.event_id = e.event_id"
        " WHERE ? < e.stream_ordering AND e.stream_ordering <= ? AND x.event_id IS NULL"
        " ORDER BY e.stream_ordering LIMIT ?",
        (position, upto, limit),
    )
    rows = [(int(o), str(e), str(r), json.loads(doc), json.loads(meta)) for o, e, r, doc, meta in txn.fetchall()]
    replaced_ids = sorted(
        {pdu["unsigned"]["replaces_state"] for *_, pdu, _ in rows if "replaces_state" in (pdu.get("unsigned") or {})}
    )
    replaced = _json_by_id(txn, replaced_ids)
    redactions = _redactions(txn, [event_id for _, event_id, *_ in rows], now_ms)
    records: list[Record] = []
    aliases_hint = False
    for ordering, event_id, room_id, pdu, meta in rows:
        previous = (pdu.get("unsigned") or {}).get("replaces_state")
        prev = replaced.get(previous) if isinstance(previous, str) else None
        stored = StoredEvent(ordering, event_id, room_id, pdu, meta, prev, redactions.get(event_id))
        records.append(event_record(client_event(stored, now_ms)))
        aliases_hint = aliases_hint or pdu.get("type") == CANONICAL_ALIAS
    after = next_position(position, upto, [row[0] for row in rows], limit)
    return Batch(position, after, records, aliases_hint)


def aliases_records(published: dict[str, frozenset[str]], now: dict[str, frozenset[str]]) -> list[Record]:
    return [aliases_record(room_id, aliases) for room_id, aliases in sorted(changed_aliases(published, now).items())]


def stream_ordering_of(txn: Cursor, event_id: str) -> int | None:
    txn.execute("SELECT stream_ordering FROM events WHERE event_id = ?", (event_id,))
    row = txn.fetchone()
    return None if row is None else int(row[0])


def max_stream_ordering(txn: Cursor) -> int:
    txn.execute("SELECT MAX(stream_ordering) FROM events")
    row = txn.fetchone()
    return int(row[0] or 0)
