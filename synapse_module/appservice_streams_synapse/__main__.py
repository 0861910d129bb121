"""Backfill and status, from Synapse's environment: ``python -m appservice_streams_synapse``.

    python -m appservice_streams_synapse status   --config homeserver.yaml
    python -m appservice_streams_synapse backfill --config homeserver.yaml --since-event '$eventid'
    python -m appservice_streams_synapse backfill --config homeserver.yaml --from-stream-ordering 1234

``backfill`` moves the feed's stored position back; the running module sees
it at its next read (within ``poll_interval_s``) and publishes again every
event after it, in order. It reads the database settings and the module's
``topic`` / ``feed_id`` from ``homeserver.yaml`` (SQLite or PostgreSQL).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from appservice_streams_synapse import sql
from appservice_streams_synapse.core import parse_config

MODULE = "appservice_streams_synapse.FeedModule"


def _connect(database: dict[str, Any]) -> Any:
    name = database.get("name")
    args = dict(database.get("args") or {})
    if name == "sqlite3":
        return sqlite3.connect(args["database"], timeout=30)
    if name == "psycopg2":
        import psycopg2  # type: ignore[import-not-found,import-untyped,unused-ignore]

        for pool_only in ("cp_min", "cp_max", "cp_reconnect", "cp_noisy", "cp_openfun"):
            args.pop(pool_only, None)
        return psycopg2.connect(**args)
    raise SystemExit(f"unsupported database engine {name!r} in homeserver.yaml")


class _Cursor:
    """A cursor that takes ``?`` placeholders whatever the engine (as Synapse's does)."""

    def __init__(self, cursor: Any, pyformat: bool) -> None:
        self._cursor = cursor
        self._pyformat = pyformat

    def execute(self, query: str, args: Sequence[Any] = ()) -> None:
        self._cursor.execute(query.replace("?", "%s") if self._pyformat else query, tuple(args))

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> Any:
        return self._cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appservice_streams_synapse")
    parser.add_argument("action", choices=["status", "backfill"])
    parser.add_argument("--config", required=True, help="Synapse's homeserver.yaml")
    parser.add_argument("--feed-id", help="the feed's position row (default: from the module's config)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-stream-ordering", type=int, help="publish again every event after this one")
    start.add_argument("--since-event", help="publish again this event and every one after it")
    args = parser.parse_args(argv)

    with open(args.config) as f:
        homeserver = yaml.safe_load(f)
    feed_id = args.feed_id
    if feed_id is None:
        entries = [m for m in homeserver.get("modules") or [] if m.get("module") == MODULE]
        if not entries:
            parser.error(f"no {MODULE} in the config's modules: give --feed-id")
        feed_id = parse_config(entries[0].get("config")).position_key
    connection = _connect(homeserver.get("database") or {"name": "sqlite3", "args": {"database": "homeserver.db"}})
    try:
        cursor = _Cursor(connection.cursor(), pyformat=not isinstance(connection, sqlite3.Connection))
        if args.action == "status":
            position = sql.read_position(cursor, feed_id)
            print(f"feed {feed_id}: position {position}, newest event {sql.max_stream_ordering(cursor)}")
            return 0
        if args.since_event is not None:
            ordering = sql.stream_ordering_of(cursor, args.since_event)
            if ordering is None:
                print(f"no event {args.since_event}", file=sys.stderr)
                return 1
            position = ordering - 1
        elif args.from_stream_ordering is not None:
            position = args.from_stream_ordering
        else:
            parser.error("backfill needs --from-stream-ordering or --since-event")
        sql.create_position_table(cursor)
        old = sql.set_position(cursor, feed_id, position)
        connection.commit()
        print(f"feed {feed_id}: position {old} -> {position}; the module publishes again from there")
        return 0
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
