"""The envelope decoder and the router's batch decision on hostile input: a BadRecord or a record, never a crash.

Whatever a producer writes, the router must dead-letter it or route it; an
exception of any other kind would stop the partition (the worker exits
without committing, and reads the same record again on every restart).
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import envelope
from streams.errors import BadRecord
from streams.interest import Interest
from streams.matrix import AppserviceID, RoomID
from streams.rooms import RoomState
from streams.routing import MAX_INPUT_RECORD_BYTES, InputRecord, route_batch
from tests.unit.test_envelope_and_routing import HS, registration

INTEREST = Interest([registration("alpha")], HS)
KINDS = ["event", "room_aliases", "ephemeral", "to_device", "device_lists", "device_keys"]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),  # beyond +-(2^53 - 1), and beyond 64 bits
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def decode_or_bad_record(raw: bytes | None) -> Any:
    try:
        return envelope.decode(raw)
    except BadRecord:
        return None


def routes_or_rejects(raw: bytes | None) -> None:
    batch = route_batch(
        [InputRecord(0, 0, raw)], lambda p, r: RoomState(), INTEREST, HS, lambda a: {AppserviceID("alpha"): 0}[a]
    )
    assert len(batch.rejected) + sum(len(i) for g in batch.items.values() for i in g.values()) <= 1


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes(raw: bytes) -> None:
    decode_or_bad_record(raw)
    routes_or_rejects(raw)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_any_json_document(doc: Any) -> None:
    raw = orjson.dumps(doc) if _dumpable(doc) else b"null"
    decode_or_bad_record(raw)
    routes_or_rejects(raw)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6), st.sampled_from(KINDS))
def test_envelopes_of_every_kind_with_arbitrary_fields(fields: dict[str, Any], kind: str) -> None:
    doc = {**fields, "v": 1, "kind": kind}
    if _dumpable(doc):
        raw = orjson.dumps(doc)
        decode_or_bad_record(raw)
        routes_or_rejects(raw)


def _dumpable(doc: Any) -> bool:
    try:
        orjson.dumps(doc)
    except TypeError:  # integers beyond 64 bits: sent as text below instead
        return False
    return True


def event(**extra: Any) -> dict[str, Any]:
    return {
        "event_id": "$e",
        "type": "m.room.message",
        "sender": "@alpha_a:example.org",
        "room_id": "!r:example.org",
        **extra,
    }


def raw_envelope(event_json: str) -> bytes:
    return b'{"v": 1, "kind": "event", "event": ' + event_json.encode("utf-8", "surrogatepass") + b"}"


def test_nan_and_infinity_are_bad_records() -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        assert decode_or_bad_record(raw_envelope('{"event_id": "$e", "depth": ' + literal + "}")) is None


def test_duplicate_keys_decode_to_one_value_or_a_bad_record() -> None:
    raw = raw_envelope('{"event_id": "$a", "event_id": "$b", "type": "t", "sender": "@s:x", "room_id": "!r:x"}')
    decoded = decode_or_bad_record(raw)
    assert decoded is None or decoded.event["event_id"] in ("$a", "$b")


def test_integers_beyond_64_bits_are_bad_records_and_beyond_2_53_pass_as_written() -> None:
    assert decode_or_bad_record(raw_envelope('{"depth": 18446744073709551616}')) is None
    decoded = decode_or_bad_record(envelope.encode("event", event=event(depth=2**53 + 1)))
    assert decoded is not None and b"9007199254740993" in decoded.payload


def test_deep_nesting_is_a_bad_record_not_a_recursion_error() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert decode_or_bad_record(raw_envelope('{"event_id": "$e", "content": ' + deep + "}")) is None
    routes_or_rejects(raw_envelope('{"event_id": "$e", "content": ' + deep + "}"))


def test_a_lone_surrogate_is_a_bad_record() -> None:
    assert decode_or_bad_record(raw_envelope('{"event_id": "\udc00", "type": "t"}')) is None
    routes_or_rejects(raw_envelope('{"event_id": "\\udc00", "type": "t", "sender": "@s:x", "room_id": "!r:x"}'))


def test_an_event_over_65536_bytes_is_routed_up_to_the_input_limit_then_dead_lettered() -> None:
    big = envelope.encode("event", event=event(content={"body": "x" * 70_000}))
    assert decode_or_bad_record(big) is not None
    too_big = envelope.encode("event", event=event(content={"body": "x" * MAX_INPUT_RECORD_BYTES}))
    batch = route_batch([InputRecord(0, 0, too_big)], lambda p, r: RoomState(), INTEREST, HS, lambda a: 0)
    assert [reason.value for _, reason, _ in batch.rejected] == ["too_large"]


def test_a_room_id_that_is_not_a_string_is_a_bad_record() -> None:
    raw = envelope.encode("event", event={**event(), "room_id": RoomID("!r:x")})
    assert decode_or_bad_record(raw) is not None
    assert decode_or_bad_record(orjson.dumps({"v": 1, "kind": "event", "event": {**event(), "room_id": 5}})) is None
