"""The Synapse feed module's pure parts, and its SQL on an in-memory SQLite with Synapse's columns.

The serialised shape is also checked end to end against what Synapse itself
sends (tests/integration/test_synapse_module.py).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from appservice_streams_synapse import sql
from appservice_streams_synapse.core import (
    StoredEvent,
    aliases_record,
    changed_aliases,
    client_event,
    event_record,
    members_record,
    next_position,
    parse_config,
    producer_config,
)
from streams import envelope
from tests.support.synapse_tables import ROOM, insert, pdu, synapse_tables

NOW = 10_000


def stored(doc: dict[str, Any], event_id: str = "$e", ordering: int = 5, **kw: Any) -> StoredEvent:
    return StoredEvent(ordering, event_id, ROOM, doc, kw.pop("meta", {}), **kw)


# --- config ---------------------------------------------------------------------------------


def test_config_defaults_and_position_key() -> None:
    config = parse_config({"bootstrap_servers": "k:9092"})
    assert (config.topic, config.worker_name, config.batch_size, config.position_key) == (
        "matrix.events",
        None,
        100,
        "matrix.events",
    )
    assert parse_config({"bootstrap_servers": "k", "feed_id": "f"}).position_key == "f"


@pytest.mark.parametrize(
    ("doc", "named"),
    [
        ({}, "bootstrap_servers"),
        ({"bootstrap_servers": "k", "batchsize": 5}, "batchsize"),
        ({"bootstrap_servers": "k", "batch_size": 0}, "batch_size"),
        ({"bootstrap_servers": "k", "worker_name": 3}, "worker_name"),
        ({"bootstrap_servers": "k", "kafka": {"acks": "1"}}, "acks"),
        ({"bootstrap_servers": "k", "kafka": {"partitioner": "consistent_random"}}, "partitioner"),
        ({"bootstrap_servers": "k", "poll_interval_s": -1}, "poll_interval_s"),
    ],
)
def test_bad_config_is_refused_naming_the_field(doc: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_config(doc)


def test_producer_settings_keep_the_guarantees_and_pass_security_through() -> None:
    config = parse_config(
        {"bootstrap_servers": "k:9093", "kafka": {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}}
    )
    settings = producer_config(config)
    assert settings["acks"] == "all" and settings["enable.idempotence"] is True
    assert settings["partitioner"] == "murmur2_random"
    assert settings["security.protocol"] == "SASL_SSL" and settings["bootstrap.servers"] == "k:9093"


# --- the client format ------------------------------------------------------------------------


def test_a_message_in_synapse_client_v1_format() -> None:
    event = client_event(stored(pdu()), NOW)
    assert event == {
        "type": "m.room.message",
        "room_id": ROOM,
        "sender": "@a:hs",
        "user_id": "@a:hs",
        "origin_server_ts": 1000,
        "content": {"body": "hi", "msgtype": "m.text"},
        "event_id": "$e",
        "age": NOW - 900,
        "unsigned": {"age": NOW - 900},
    }


def test_a_state_change_carries_prev_content_and_stripped_state() -> None:
    doc = pdu(
        "m.room.member",
        state_key="@b:hs",
        content={"membership": "invite"},
        unsigned={"age_ts": 900, "replaces_state": "$old", "invite_room_state": [{"type": "m.room.name"}]},
    )
    event = client_event(stored(doc, replaced={"content": {"membership": "leave"}, "sender": "@b:hs"}), NOW)
    assert event["unsigned"] == {
        "age": NOW - 900,
        "replaces_state": "$old",
        "invite_room_state": [{"type": "m.room.name"}],
        "prev_content": {"membership": "leave"},
        "prev_sender": "@b:hs",
    }
    assert event["prev_content"] == {"membership": "leave"} and event["replaces_state"] == "$old"
    assert event["invite_room_state"] == [{"type": "m.room.name"}] and event["state_key"] == "@b:hs"


def test_a_redacted_event_is_pruned_and_says_why() -> None:
    redaction = stored(pdu("m.room.redaction", content={"redacts": "$e"}), "$red", 6)
    event = client_event(stored(pdu(), redaction=redaction), NOW)
    assert event["content"] == {}
    assert event["unsigned"]["redacted_by"] == "$red"
    assert event["redacted_because"]["redacts"] == "$e", "the redaction's top-level redacts (room v11+)"
    member = pdu("m.room.member", state_key="@a:hs", content={"membership": "join", "displayname": "A"})
    assert client_event(stored(member, redaction=redaction), NOW)["content"] == {"membership": "join"}


def test_admin_flags_from_the_internal_metadata() -> None:
    event = client_event(stored(pdu(), meta={"soft_failed": True, "txn_id": "t"}), NOW)
    assert event["unsigned"]["io.element.synapse.soft_failed"] is True
    assert "txn_id" not in json.dumps(event)


# --- records ----------------------------------------------------------------------------------


def test_records_are_envelopes_the_router_reads_keyed_by_room() -> None:
    key, value = event_record(client_event(stored(pdu()), NOW))
    decoded = envelope.decode(value)
    assert key == ROOM.encode() and envelope.record_key(decoded) == ROOM
    assert isinstance(decoded, envelope.RoomEvent) and decoded.event["event_id"] == "$e"
    key, value = members_record(ROOM, ["@b:hs", "@a:hs"])
    assert key == ROOM.encode()
    assert envelope.decode(value) == envelope.RoomMembers(envelope.RoomID(ROOM), frozenset({"@a:hs", "@b:hs"}))
    _, value = aliases_record(ROOM, ["#a:hs"])
    assert envelope.decode(value) == envelope.RoomAliases(envelope.RoomID(ROOM), frozenset({"#a:hs"}))


def test_alias_changes_include_rooms_that_lost_their_last_alias() -> None:
    published = {"!a:hs": frozenset({"#a:hs"}), "!b:hs": frozenset({"#b:hs"})}
    now = {"!a:hs": frozenset({"#a:hs"}), "!c:hs": frozenset({"#c:hs"})}
    assert changed_aliases(published, now) == {"!c:hs": frozenset({"#c:hs"}), "!b:hs": frozenset()}


@pytest.mark.parametrize(
    ("position", "upto", "read", "limit", "expected"),
    [
        (10, 20, [], 5, 20),  # nothing (or only rejected events) up to the token: at the token
        (10, 20, [12, 15], 5, 20),  # a short read covered everything to the token
        (10, 20, [11, 12, 13, 14, 15], 5, 15),  # a full read ends at its last row
        (10, 8, [], 5, 10),  # never backwards
    ],
)
def test_next_position(position: int, upto: int, read: list[int], limit: int, expected: int) -> None:
    assert next_position(position, upto, read, limit) == expected


# --- SQL on Synapse's columns -----------------------------------------------------------------


@pytest.fixture
def db() -> Iterator[sqlite3.Cursor]:
    with synapse_tables() as cursor:
        yield cursor


def test_cold_start_snapshots_local_joined_members_then_resumes_from_the_stored_position(db: sqlite3.Cursor) -> None:
    db.executemany(
        "INSERT INTO local_current_membership VALUES (?, ?, '$m', ?)",
        [(ROOM, "@a:hs", "join"), (ROOM, "@b:hs", "leave"), ("!other:hs", "@c:hs", "join")],
    )
    position, snapshot = sql.start(db, "feed")
    assert position is None
    assert [envelope.decode(v) for _, v in snapshot] == [
        envelope.RoomMembers(envelope.RoomID("!other:hs"), frozenset({"@c:hs"})),
        envelope.RoomMembers(envelope.RoomID(ROOM), frozenset({"@a:hs"})),
    ]
    sql.insert_position(db, "feed", 7)
    assert sql.start(db, "feed") == (7, [])


def test_a_batch_skips_rejected_events_and_stops_at_the_limit_or_the_token(db: sqlite3.Cursor) -> None:
    sql.create_position_table(db)
    sql.insert_position(db, "feed", 1)
    for n in range(2, 9):
        insert(db, n, f"$e{n}", pdu())
    db.execute("INSERT INTO rejections VALUES ('$e3', 'bad', '')")
    batch = sql.read_batch(db, "feed", upto=7, limit=3, now_ms=NOW)  # $e8 is past the persisted-up-to token
    assert [json.loads(v)["event"]["event_id"] for _, v in batch.records] == ["$e2", "$e4", "$e5"]
    assert (batch.position, batch.next_position) == (1, 5)
    assert sql.advance_position(db, "feed", 1, 5)
    batch = sql.read_batch(db, "feed", upto=7, limit=3, now_ms=NOW)
    assert [json.loads(v)["event"]["event_id"] for _, v in batch.records] == ["$e6", "$e7"]
    assert batch.next_position == 7


def test_the_position_is_stored_only_if_no_backfill_moved_it(db: sqlite3.Cursor) -> None:
    sql.create_position_table(db)
    sql.insert_position(db, "feed", 10)
    assert sql.set_position(db, "feed", 3) == 10  # the backfill CLI
    assert not sql.advance_position(db, "feed", 10, 20)
    assert sql.read_position(db, "feed") == 3


def test_a_batch_reads_prev_content_redactions_and_canonical_alias_hints(db: sqlite3.Cursor) -> None:
    sql.create_position_table(db)
    sql.insert_position(db, "feed", 0)
    insert(db, 1, "$old", pdu("m.room.member", state_key="@a:hs", content={"membership": "invite"}))
    joined = {"age_ts": 900, "replaces_state": "$old"}
    insert(db, 2, "$join", pdu("m.room.member", state_key="@a:hs", content={"membership": "join"}, unsigned=joined))
    insert(db, 3, "$msg", pdu())
    insert(db, 4, "$red", pdu("m.room.redaction", content={"redacts": "$msg"}))
    db.execute("INSERT INTO redactions VALUES ('$red', '$msg', 0, 0)")
    insert(db, 5, "$alias", pdu("m.room.canonical_alias", state_key="", content={"alias": "#a:hs"}))
    batch = sql.read_batch(db, "feed", upto=5, limit=10, now_ms=NOW)
    events = {e["event_id"]: e for e in (json.loads(v)["event"] for _, v in batch.records)}
    assert events["$join"]["unsigned"]["prev_content"] == {"membership": "invite"}
    assert events["$msg"]["content"] == {} and events["$msg"]["unsigned"]["redacted_by"] == "$red"
    assert batch.aliases_may_have_changed


def test_aliases_are_read_per_room(db: sqlite3.Cursor) -> None:
    db.executemany(
        "INSERT INTO room_aliases VALUES (?, ?, '@a:hs')", [("#a:hs", ROOM), ("#b:hs", ROOM), ("#c:hs", "!c:hs")]
    )
    now = sql.read_aliases(db)
    assert now == {ROOM: frozenset({"#a:hs", "#b:hs"}), "!c:hs": frozenset({"#c:hs"})}
    assert next(envelope.decode(v) for _, v in sql.aliases_records({}, now)) == envelope.RoomAliases(
        envelope.RoomID("!c:hs"), frozenset({"#c:hs"})
    )


# --- the module's wake-up (a fake ModuleApi that records calls) ---------------------------------


class FakeApi:
    def __init__(self, worker_name: str | None) -> None:
        self.worker_name = worker_name
        self.calls: list[str] = []
        self.on_new_event: Any = None

    def register_third_party_rules_callbacks(self, on_new_event: Any) -> None:
        self.on_new_event = on_new_event

    def looping_background_call(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append("looping")

    def delayed_background_call(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append("delayed")

    def run_as_background_process(self, desc: str, func: Any) -> None:
        self.calls.append(desc)
        func().close()  # started, never awaited: the callback must not wait for it


def test_only_the_configured_instance_registers_anything() -> None:
    from appservice_streams_synapse import FeedModule

    api = FakeApi("event_persister1")
    FeedModule(parse_config({"bootstrap_servers": "k"}), api)
    assert api.on_new_event is None and api.calls == []
    api = FakeApi("feeder")
    FeedModule(parse_config({"bootstrap_servers": "k", "worker_name": "feeder"}), api)
    assert api.on_new_event is not None and api.calls == ["looping", "looping", "delayed"]


async def test_on_new_event_only_wakes_the_loop_once_while_it_runs() -> None:
    from appservice_streams_synapse import FeedModule

    api = FakeApi(None)
    FeedModule(parse_config({"bootstrap_servers": "k"}), api)
    for _ in range(3):
        await api.on_new_event(object(), {})
    assert api.calls.count("appservice_streams_feed") == 1, "later events only ask the running loop to go round"
