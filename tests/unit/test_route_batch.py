"""The router's decision for a batch: room state kept in order, items grouped by inbox partition."""

from __future__ import annotations

from typing import Any

from streams import envelope
from streams.dead_letter import Reason
from streams.interest import Interest
from streams.machine import ItemKind, SourcePosition
from streams.matrix import AppserviceID, RoomID
from streams.rooms import RoomState
from streams.routing import MAX_INPUT_RECORD_BYTES, InputRecord, route_batch
from tests.unit.test_envelope_and_routing import HS, registration

ALPHA, BETA = registration("alpha"), registration("beta")
INTEREST = Interest([ALPHA, BETA], HS)
PARTITIONS = {AppserviceID("alpha"): 3, AppserviceID("beta"): 1}
ROOM = RoomID("!r:example.org")


def event(n: int, sender: str, room: str = ROOM, **extra: Any) -> bytes:
    doc = {"event_id": f"$e{n}", "type": "m.room.message", "sender": sender, "room_id": room, "content": {}}
    return envelope.encode("event", event={**doc, **extra})


def join(n: int, user: str) -> bytes:
    return event(n, user, type="m.room.member", state_key=user, content={"membership": "join"})


def records(*values: bytes | None, partition: int = 0) -> list[InputRecord]:
    return [InputRecord(partition, offset, value) for offset, value in enumerate(values)]


def empty_room(partition: int, room_id: RoomID) -> RoomState:
    return RoomState()


def route(batch: list[InputRecord], load: Any = empty_room) -> Any:
    return route_batch(batch, load, INTEREST, HS, PARTITIONS.__getitem__)


def test_items_are_grouped_by_inbox_partition_then_appservice_in_input_order() -> None:
    batch = route(
        records(event(0, "@alpha_a:example.org"), event(1, "@beta_b:example.org"), event(2, "@alpha_c:example.org"))
    )
    assert set(batch.items) == {3, 1}
    assert [i.source for i in batch.items[3]["alpha"]] == [SourcePosition(0, 0), SourcePosition(0, 2)]
    assert [i.source for i in batch.items[1]["beta"]] == [SourcePosition(0, 1)]
    assert all(i.kind is ItemKind.EVENT for i in batch.items[3]["alpha"])


def test_a_join_earlier_in_the_batch_makes_later_events_of_the_room_interesting() -> None:
    batch = route(
        records(event(0, "@stranger:example.org"), join(1, "@alpha_a:example.org"), event(2, "@stranger:example.org"))
    )
    assert [i.source.offset for i in batch.items[3]["alpha"]] == [1, 2]
    assert batch.rooms[(0, ROOM)].members == frozenset({"@alpha_a:example.org"})


def test_rooms_are_read_from_the_store_per_input_partition() -> None:
    asked: list[tuple[int, RoomID]] = []

    def load(partition: int, room_id: RoomID) -> RoomState:
        asked.append((partition, room_id))
        return RoomState(members=frozenset({"@beta_b:example.org"}))

    batch = route(records(event(0, "@stranger:example.org"), partition=5), load)
    assert asked == [(5, ROOM)]
    assert [i.source for i in batch.items[1]["beta"]] == [SourcePosition(5, 0)]
    assert batch.rooms == {}, "an unchanged room is not written back"


def test_aliases_change_the_room_and_route_nothing() -> None:
    value = envelope.encode("room_aliases", room_id=ROOM, aliases=["#a:example.org", "#remote:elsewhere.org"])
    batch = route(records(value))
    assert batch.items == {}
    assert batch.rooms[(0, ROOM)].aliases == frozenset({"#a:example.org"})


def test_unreadable_records_are_rejected_with_the_reason_and_the_batch_goes_on() -> None:
    batch = route(records(b"not json", None, event(2, "@alpha_a:example.org")))
    assert [(r.offset, reason, detail.split(":")[0]) for r, reason, detail in batch.rejected] == [
        (0, Reason.MALFORMED, "not JSON"),
        (1, Reason.MALFORMED, "record has no value"),
    ]
    assert [i.source.offset for i in batch.items[3]["alpha"]] == [2]


def test_a_record_over_the_input_limit_is_rejected_as_too_large_and_the_batch_goes_on() -> None:
    padding = "x" * MAX_INPUT_RECORD_BYTES
    big = event(0, "@alpha_a:example.org", content={"body": padding})
    batch = route(records(big, event(1, "@alpha_a:example.org")))
    [(record, reason, detail)] = batch.rejected
    assert (record.offset, reason) == (0, Reason.TOO_LARGE)
    assert detail.startswith(f"{len(big)} bytes")
    assert [i.source.offset for i in batch.items[3]["alpha"]] == [1]


def test_a_record_at_the_input_limit_is_routed() -> None:
    doc = event(0, "@alpha_a:example.org", content={"body": ""})
    at_limit = event(0, "@alpha_a:example.org", content={"body": "x" * (MAX_INPUT_RECORD_BYTES - len(doc))})
    assert len(at_limit) == MAX_INPUT_RECORD_BYTES
    batch = route(records(at_limit))
    assert batch.rejected == []
    assert [i.source.offset for i in batch.items[3]["alpha"]] == [0]


def test_an_event_nobody_wants_makes_no_item() -> None:
    assert route(records(event(0, "@stranger:example.org"))).items == {}


def test_a_members_snapshot_replaces_the_local_joined_members_and_routes_nothing() -> None:
    snapshot = envelope.encode("room_members", room_id=ROOM, members=["@beta_b:example.org", "@remote:elsewhere.org"])
    known = RoomState(aliases=frozenset({"#a:example.org"}), members=frozenset({"@alpha_a:example.org"}))
    batch = route(records(snapshot, event(1, "@stranger:example.org")), lambda p, r: known)
    assert batch.rooms[(0, ROOM)] == RoomState(frozenset({"#a:example.org"}), frozenset({"@beta_b:example.org"}))
    # rule 5 from the snapshot: the stranger's event goes to beta (its member is joined), no longer to alpha
    assert set(batch.items) == {1} and [i.source.offset for i in batch.items[1]["beta"]] == [1]


def test_a_members_snapshot_needs_a_list_of_strings() -> None:
    batch = route(records(envelope.encode("room_members", room_id=ROOM, members="@a:example.org")))
    assert [(reason, detail) for _, reason, detail in batch.rejected] == [
        (Reason.MALFORMED, "must be a list of strings (field 'members')")
    ]
