"""Inbox records: routed items of many appservices in as few records as fit; outcomes by key."""

from __future__ import annotations

import pytest

from streams.errors import BadRecord
from streams.machine import Item, ItemKind, ItemsArrived, Resume, SourcePosition, TxnSucceeded
from streams.matrix import AppserviceID, TxnID
from streams.records import (
    MAX_BATCH_BYTES,
    decode_inbox_record,
    decode_routed,
    encode_outcome,
    encode_routed,
)

A = AppserviceID("bridge-a")
B = AppserviceID("bot-b")


def item(n: int, size: int = 10, kind: ItemKind = ItemKind.EVENT) -> Item:
    return Item(kind, SourcePosition(n % 3, n), b"x" * size)


def items_of(records: list[bytes]) -> dict[AppserviceID, list[Item]]:
    out: dict[AppserviceID, list[Item]] = {}
    for record in records:
        for appservice_id, arrived in decode_routed(record):
            out.setdefault(appservice_id, []).extend(arrived.items)
    return out


def test_items_of_several_appservices_round_trip_in_one_record_in_order() -> None:
    a_items = [item(0), item(1, kind=ItemKind.EPHEMERAL), item(2, size=0), item(3, kind=ItemKind.DEVICE)]
    b_items = [item(4, kind=ItemKind.TO_DEVICE)]
    [record] = encode_routed({A: a_items, B: b_items})
    assert decode_routed(record) == [(A, ItemsArrived(tuple(a_items))), (B, ItemsArrived(tuple(b_items)))]


def test_items_are_split_across_records_under_the_size_cap_keeping_each_appservices_order() -> None:
    routed = {A: [item(n, size=100_000) for n in range(25)], B: [item(n, size=70_000) for n in range(30)]}
    records = encode_routed(routed)
    assert len(records) > 1 and all(len(r) <= MAX_BATCH_BYTES for r in records)
    assert items_of(records) == routed


def test_an_item_larger_than_the_cap_gets_a_record_of_its_own() -> None:
    routed = {A: [item(0), item(1, size=MAX_BATCH_BYTES), item(2)]}
    records = encode_routed(routed)
    assert len(records) == 3
    assert items_of(records) == routed


def test_no_items_make_no_record() -> None:
    assert encode_routed({}) == []
    assert encode_routed({A: []}) == []


def test_a_truncated_routed_record_is_a_bad_record() -> None:
    [record] = encode_routed({A: [item(1)]})
    with pytest.raises(BadRecord):
        decode_routed(record[:-3])


def test_a_routed_record_names_its_appservices_whatever_its_key() -> None:
    [record] = encode_routed({A: [item(1)], B: [item(2)]})
    assert [a for a, _ in decode_inbox_record(None, record)] == [A, B]


def test_an_outcome_belongs_to_the_appservice_in_its_key() -> None:
    assert decode_inbox_record(b"bridge-a", encode_outcome(TxnSucceeded(TxnID(7)))) == [(A, TxnSucceeded(TxnID(7)))]


@pytest.mark.parametrize("key", [None, b"", b"\xff\xfe"])
def test_an_outcome_without_a_readable_key_is_a_bad_record(key: bytes | None) -> None:
    with pytest.raises(BadRecord):
        decode_inbox_record(key, encode_outcome(Resume()))
