"""The ingest's pure core: a transaction body → input-envelope records, positions, the dedup rule."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from streams import envelope
from streams.errors import BadRecord, BadTransaction, NotJSON
from streams.ingest import (
    Position,
    Produce,
    Retry,
    decide,
    decode_position,
    encode_position,
    parse_body,
    records_of,
)

EVENT = {
    "event_id": "$e1",
    "type": "m.room.message",
    "sender": "@alice:hs",
    "room_id": "!r:hs",
    "origin_server_ts": 1,
    "content": {"body": "hi"},
    "unsigned": {"age": 5},
}
TYPING = {"type": "m.typing", "room_id": "!r:hs", "content": {"user_ids": ["@alice:hs"]}}
RECEIPT = {"type": "m.receipt", "room_id": "!r:hs", "content": {"$e1": {"m.read": {"@alice:hs": {"ts": 1}}}}}
PRESENCE = {"type": "m.presence", "sender": "@bob:hs", "content": {"presence": "online"}}
TO_DEVICE = {
    "type": "m.room_key_request",
    "sender": "@alice:hs",
    "to_user_id": "@bridge_x:hs",
    "to_device_id": "DEV",
    "content": {"action": "request"},
}


def decoded(body: dict[str, Any]) -> list[tuple[str, envelope.Envelope]]:
    """Each record as (key, what the router will decode from its value)."""
    return [(key.decode(), envelope.decode(value)) for key, value in records_of(body).records]


def test_events_become_event_records_keyed_by_room_with_the_event_untouched() -> None:
    second = {**EVENT, "event_id": "$e2", "room_id": "!other:hs"}
    records = records_of({"events": [EVENT, second]}).records
    assert [key for key, _ in records] == [b"!r:hs", b"!other:hs"]
    assert records[0][1] == envelope.encode("event", event=EVENT)
    assert orjson.loads(records[0][1])["event"] == EVENT  # unsigned and every other field kept


def test_an_empty_transaction_and_one_without_events_give_no_records() -> None:
    assert records_of({"events": []}).records == []
    assert records_of({}).records == []


def test_typing_and_receipts_are_keyed_by_room_presence_by_user() -> None:
    got = decoded({"ephemeral": [TYPING, RECEIPT, PRESENCE]})
    assert [key for key, _ in got] == ["!r:hs", "!r:hs", "@bob:hs"]
    assert [r.edu_type for _, r in got if isinstance(r, envelope.Ephemeral)] == ["m.typing", "m.receipt", "m.presence"]


def test_the_same_ephemeral_list_under_both_names_is_taken_once() -> None:
    body = {"ephemeral": [TYPING, RECEIPT], "de.sorunome.msc2409.ephemeral": [TYPING, RECEIPT]}
    assert len(records_of(body).records) == 2


def test_ephemeral_under_the_unstable_name_alone_is_taken() -> None:
    assert len(records_of({"de.sorunome.msc2409.ephemeral": [TYPING]}).records) == 1


def test_differing_lists_give_the_stable_ones_then_the_unstable_ones_it_lacks() -> None:
    body = {"ephemeral": [TYPING], "de.sorunome.msc2409.ephemeral": [RECEIPT, TYPING]}
    assert [orjson.loads(v)["edu"]["type"] for _, v in records_of(body).records] == ["m.typing", "m.receipt"]


def test_an_edu_type_the_envelope_does_not_carry_is_skipped_and_reported_not_refused() -> None:
    result = records_of({"ephemeral": [{"type": "org.example.custom", "content": {}}, TYPING]})
    assert len(result.records) == 1
    assert result.skipped == ["ephemeral[0]: EDU type 'org.example.custom' is not carried"]


def test_to_device_is_keyed_by_recipient_and_taken_once_under_both_names() -> None:
    body = {"to_device": [TO_DEVICE], "de.sorunome.msc2409.to_device": [TO_DEVICE]}
    got = decoded(body)
    assert [key for key, _ in got] == ["@bridge_x:hs"]
    assert isinstance(got[0][1], envelope.ToDevice)
    assert decoded({"de.sorunome.msc2409.to_device": [TO_DEVICE]})[0][0] == "@bridge_x:hs"


def test_device_lists_become_one_record_per_user_and_change() -> None:
    body = {"org.matrix.msc3202.device_lists": {"changed": ["@a:hs", "@b:hs"], "left": ["@c:hs"]}}
    records = records_of(body).records
    assert [(k, orjson.loads(v)["change"]) for k, v in records] == [
        (b"@a:hs", "changed"),
        (b"@b:hs", "changed"),
        (b"@c:hs", "left"),
    ]
    assert records[0][1] == envelope.encode("device_lists", user_id="@a:hs", change="changed")


def test_key_counts_and_fallback_keys_of_a_device_become_one_record() -> None:
    body = {
        "org.matrix.msc3202.device_one_time_keys_count": {"@a:hs": {"D1": {"signed_curve25519": 50}}},
        "org.matrix.msc3202.device_unused_fallback_key_types": {
            "@a:hs": {"D1": ["signed_curve25519"]},
            "@b:hs": {"D2": []},
        },
    }
    records = records_of(body).records
    assert [(k, orjson.loads(v)) for k, v in records] == [
        (
            b"@a:hs",
            {
                "v": 1,
                "kind": "device_keys",
                "user_id": "@a:hs",
                "device_id": "D1",
                "one_time_keys_count": {"signed_curve25519": 50},
                "unused_fallback_key_types": ["signed_curve25519"],
            },
        ),
        (
            b"@b:hs",
            {"v": 1, "kind": "device_keys", "user_id": "@b:hs", "device_id": "D2", "unused_fallback_key_types": []},
        ),
    ]


def test_synapses_misspelt_key_counts_are_read_and_the_correct_name_wins() -> None:
    misspelt = {"org.matrix.msc3202.device_one_time_key_counts": {"@a:hs": {"D1": {"signed_curve25519": 3}}}}
    assert orjson.loads(records_of(misspelt).records[0][1])["one_time_keys_count"] == {"signed_curve25519": 3}
    both = {
        **misspelt,
        "org.matrix.msc3202.device_one_time_keys_count": {"@a:hs": {"D1": {"signed_curve25519": 7}}},
    }
    records = records_of(both).records
    assert len(records) == 1
    assert orjson.loads(records[0][1])["one_time_keys_count"] == {"signed_curve25519": 7}


def test_a_whole_synapse_body_keeps_its_order_events_first() -> None:
    body = {
        "events": [EVENT],
        "ephemeral": [TYPING],
        "de.sorunome.msc2409.ephemeral": [TYPING],
        "de.sorunome.msc2409.to_device": [TO_DEVICE],
        "org.matrix.msc3202.device_lists": {"changed": ["@a:hs"], "left": []},
        "org.matrix.msc3202.device_one_time_keys_count": {"@a:hs": {"D1": {"signed_curve25519": 1}}},
        "org.matrix.msc3202.device_one_time_key_counts": {"@a:hs": {"D1": {"signed_curve25519": 1}}},
    }
    kinds = [orjson.loads(v)["kind"] for _, v in records_of(body).records]
    assert kinds == ["event", "ephemeral", "to_device", "device_lists", "device_keys"]


def test_every_record_decodes_with_the_envelope_decoder_the_router_uses() -> None:
    body = {
        "events": [EVENT],
        "ephemeral": [TYPING, RECEIPT, PRESENCE],
        "to_device": [TO_DEVICE],
        "org.matrix.msc3202.device_lists": {"changed": ["@a:hs"], "left": ["@b:hs"]},
        "org.matrix.msc3202.device_unused_fallback_key_types": {"@a:hs": {"D": ["x"]}},
    }
    for key, record in decoded(body):
        assert key == envelope.record_key(record)


def test_parse_body_refuses_what_is_not_json_and_what_is_not_an_object() -> None:
    with pytest.raises(NotJSON, match="not JSON"):
        parse_body(b"{not json")
    with pytest.raises(NotJSON):
        parse_body(b"\xff\xfe")
    with pytest.raises(BadTransaction, match="not a JSON object") as info:
        parse_body(b"[1, 2]")
    assert not isinstance(info.value, NotJSON)
    assert parse_body(b'{"events": []}') == {"events": []}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": {}}, "events"),
        ({"events": ["x"]}, "events[0]"),
        ({"events": [EVENT, {**EVENT, "room_id": 5}]}, "events[1].room_id"),
        ({"events": [{k: v for k, v in EVENT.items() if k != "sender"}]}, "events[0].sender"),
        ({"ephemeral": "x"}, "ephemeral"),
        ({"ephemeral": [5]}, "ephemeral[0]"),
        ({"ephemeral": [{"content": {}}]}, "ephemeral[0].type"),
        ({"ephemeral": [{"type": "m.typing", "content": {}}]}, "ephemeral[0].room_id"),
        ({"ephemeral": [{"type": "m.presence", "content": {}}]}, "ephemeral[0].sender"),
        (
            {"de.sorunome.msc2409.ephemeral": [{"type": "m.typing", "room_id": "!r"}]},
            "de.sorunome.msc2409.ephemeral[0].content",
        ),
        ({"to_device": [{**TO_DEVICE, "to_device_id": None}]}, "to_device[0].to_device_id"),
        ({"de.sorunome.msc2409.to_device": [[]]}, "de.sorunome.msc2409.to_device[0]"),
        ({"org.matrix.msc3202.device_lists": []}, "org.matrix.msc3202.device_lists"),
        ({"org.matrix.msc3202.device_lists": {"changed": "@a:hs"}}, "org.matrix.msc3202.device_lists.changed"),
        ({"org.matrix.msc3202.device_lists": {"left": [1]}}, "org.matrix.msc3202.device_lists.left[0]"),
        ({"org.matrix.msc3202.device_one_time_keys_count": []}, "org.matrix.msc3202.device_one_time_keys_count"),
        (
            {"org.matrix.msc3202.device_one_time_keys_count": {"@a:hs": []}},
            "org.matrix.msc3202.device_one_time_keys_count[@a:hs]",
        ),
        (
            {"org.matrix.msc3202.device_one_time_keys_count": {"@a:hs": {"D": {"alg": "many"}}}},
            "device keys of @a:hs D.one_time_keys_count",
        ),
        (
            {"org.matrix.msc3202.device_unused_fallback_key_types": {"@a:hs": {"D": [1]}}},
            "device keys of @a:hs D.unused_fallback_key_types",
        ),
    ],
)
def test_a_malformed_body_is_refused_whole_naming_the_body_path(body: dict[str, Any], field: str) -> None:
    with pytest.raises(BadTransaction) as info:
        records_of(body)
    assert info.value.field == field


# ---------------------------------------------------------------------------- positions and dedup


def test_a_position_round_trips_and_has_a_documented_layout() -> None:
    position = Position.of("42", b'{"events": []}')
    assert position.digest == hashlib.sha256(b'{"events": []}').hexdigest()
    raw = encode_position(position)
    assert orjson.loads(raw) == {
        "v": 1,
        "txn_id": "42",
        "sha256": position.digest,
        "events_sha256": hashlib.sha256(b"").hexdigest(),
    }
    assert decode_position(raw) == position


def test_a_position_stored_by_the_previous_release_has_no_events_digest() -> None:
    raw = b'{"v": 1, "txn_id": "42", "sha256": "ab"}'
    assert decode_position(raw) == Position("42", "ab", None)


@pytest.mark.parametrize(
    "raw", [b"nope", b"[]", b'{"v": 2, "txn_id": "1", "sha256": "x"}', b'{"v": 1, "txn_id": 1, "sha256": "x"}']
)
def test_a_stored_position_that_is_not_version_1_is_a_bad_record(raw: bytes) -> None:
    with pytest.raises(BadRecord):
        decode_position(raw)


def test_the_first_transaction_is_produced() -> None:
    assert decide(None, Position.of("1", b"{}")) == Produce()


def test_a_retry_of_the_last_transaction_is_not_produced_again() -> None:
    last = Position.of("7", b'{"events": [1]}')
    assert decide(last, Position.of("7", b'{"events": [1]}')) == Retry()


def test_the_next_id_is_produced() -> None:
    assert decide(Position.of("7", b"a"), Position.of("8", b"b")) == Produce(went_back=False)


def test_a_lower_id_is_produced_and_flagged_never_dropped() -> None:
    # Synapse on SQLite restarts its counter (synapse#14556): the content is new.
    assert decide(Position.of("900", b"a"), Position.of("1", b"b")) == Produce(went_back=True)
    assert decide(Position.of("10", b"a"), Position.of("9", b"a")) == Produce(went_back=True)


def test_the_same_id_with_another_body_is_new_content_and_flagged() -> None:
    assert decide(Position.of("7", b"a"), Position.of("7", b"b")) == Produce(went_back=True)


def _txn(*event_ids: str, age: int = 0, typing: bool = False) -> bytes:
    events = [{"event_id": e, "type": "m.room.message", "unsigned": {"age": age}} for e in event_ids]
    ephemeral = [{"type": "m.typing", "room_id": "!r"}] if typing else []
    return orjson.dumps({"events": events, "ephemeral": ephemeral})


def test_synapses_resend_of_the_same_events_is_a_retry_though_not_byte_for_byte() -> None:
    # Synapse recomputes each event's unsigned.age at every attempt and does not store ephemeral data
    # for a retry: the same txn id with the same events, in another body, is the same transaction.
    last = Position.of("7", _txn("$a", "$b", age=10, typing=True))
    assert decide(last, Position.of("7", _txn("$a", "$b", age=2510))) == Retry()


def test_a_position_from_the_body_the_ingest_parsed_is_the_position_of_its_bytes() -> None:
    raw = _txn("$a", "$b", age=10, typing=True)
    assert Position.of("7", raw, orjson.loads(raw)) == Position.of("7", raw)
    assert Position.of("7", raw).events is not None


def test_the_same_id_with_other_events_is_new_content_and_flagged() -> None:
    last = Position.of("7", _txn("$a", "$b"))
    assert decide(last, Position.of("7", _txn("$a", "$c"))) == Produce(went_back=True)


def test_a_position_of_the_previous_release_still_tells_a_byte_identical_retry() -> None:
    body = _txn("$a")
    last = Position("7", Position.of("7", body).digest, None)
    assert decide(last, Position.of("7", body)) == Retry()
    assert decide(last, Position.of("7", _txn("$a", age=5))) == Produce(went_back=True)


def test_ids_compare_as_numbers_not_strings_and_other_ids_are_not_flagged() -> None:
    assert decide(Position.of("9", b"a"), Position.of("10", b"b")) == Produce(went_back=False)
    assert decide(Position.of("abc", b"a"), Position.of("abb", b"b")) == Produce(went_back=False)


def test_beside_the_feed_module_room_events_are_left_out_and_the_rest_kept() -> None:
    body = {"events": [EVENT, {"not": "an event"}], "ephemeral": [TYPING]}
    records = records_of(body, room_events=False).records
    assert [type(envelope.decode(value)) for _, value in records] == [envelope.Ephemeral]
