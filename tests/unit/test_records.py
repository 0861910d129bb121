"""Inbox records: routed items of many appservices in as few records as fit; outcomes by key."""

from __future__ import annotations

import pytest

from streams.errors import BadRecord
from streams.machine import Item, ItemKind, ItemsArrived, Resume, SourcePosition, TxnSucceeded
from streams.matrix import AppserviceID, TxnID
from streams.records import (
    ARRIVED_HEADER,
    MAX_BATCH_BYTES,
    RoutedRecord,
    decode_inbox_record,
    decode_routed,
    encode_outcome,
    encode_routed,
)

A = AppserviceID("bridge-a")
B = AppserviceID("bot-b")


T0 = 1_764_650_000_000


def item(n: int, size: int = 10, kind: ItemKind = ItemKind.EVENT) -> Item:
    return Item(kind, SourcePosition(n % 3, n), b"x" * size, T0 + n)


def items_of(records: list[RoutedRecord]) -> dict[AppserviceID, list[Item]]:
    out: dict[AppserviceID, list[Item]] = {}
    for record in records:
        for appservice_id, arrived in decode_routed(record.value, record.arrived):
            out.setdefault(appservice_id, []).extend(arrived.items)
    return out


def test_items_of_several_appservices_round_trip_in_one_record_in_order_with_their_times() -> None:
    a_items = [item(0), item(1, kind=ItemKind.EPHEMERAL), item(2, size=0), item(3, kind=ItemKind.DEVICE)]
    b_items = [item(4, kind=ItemKind.TO_DEVICE), Item(ItemKind.EVENT, SourcePosition(0, 9), b"{}")]  # no time
    [record] = encode_routed({A: a_items, B: b_items})
    expected = [(A, ItemsArrived(tuple(a_items))), (B, ItemsArrived(tuple(b_items)))]
    assert decode_routed(record.value, record.arrived) == expected
    assert decode_inbox_record(None, record.value, headers=dict(record.headers)) == expected


def test_items_are_split_across_records_under_the_size_cap_with_their_times_keeping_each_appservices_order() -> None:
    routed = {A: [item(n, size=100_000) for n in range(25)], B: [item(n, size=70_000) for n in range(30)]}
    records = encode_routed(routed)
    assert len(records) > 1 and all(len(r.value) + len(r.arrived) <= MAX_BATCH_BYTES for r in records)
    assert items_of(records) == routed


def test_the_times_header_counts_towards_the_size_cap() -> None:
    records = encode_routed({A: [item(n, size=0) for n in range(60_000)]})  # 17 bytes of item, 8 of time each
    assert len(records) == 2 and all(len(r.value) + len(r.arrived) <= MAX_BATCH_BYTES for r in records)


# Captured from encode_routed before items carried their times (commit eb17648): no header.
PREVIOUS_RELEASE_ROUTED = (
    b'\x01M\x00\x06bridge\x00\x00\x000\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x07{"e":1}'
    b'\x02\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x06\x00\x00\x00\x07{"t":2}\x00\x03bot\x00\x00\x00\x18'
    b'\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x00\x07{"p":3}'
)


def test_a_routed_record_of_the_previous_release_decodes_with_its_times_not_known() -> None:
    assert decode_inbox_record(None, PREVIOUS_RELEASE_ROUTED, headers={}) == [
        (
            AppserviceID("bridge"),
            ItemsArrived(
                (
                    Item(ItemKind.EVENT, SourcePosition(0, 5), b'{"e":1}'),
                    Item(ItemKind.TO_DEVICE, SourcePosition(1, 6), b'{"t":2}'),
                )
            ),
        ),
        (AppserviceID("bot"), ItemsArrived((Item(ItemKind.EPHEMERAL, SourcePosition(0, 7), b'{"p":3}'),))),
    ]


def test_the_value_layout_is_the_previous_releases_so_it_reads_the_new_records() -> None:
    [record] = encode_routed(
        {
            AppserviceID("bridge"): [
                Item(ItemKind.EVENT, SourcePosition(0, 5), b'{"e":1}', T0),
                Item(ItemKind.TO_DEVICE, SourcePosition(1, 6), b'{"t":2}', T0),
            ],
            AppserviceID("bot"): [Item(ItemKind.EPHEMERAL, SourcePosition(0, 7), b'{"p":3}', T0)],
        }
    )
    assert record.value == PREVIOUS_RELEASE_ROUTED
    assert record.headers == [(ARRIVED_HEADER, (T0).to_bytes(8, "big") * 3)]


@pytest.mark.parametrize("header", [b"\x00" * 7, b"\x00" * 8, b"\x00" * 24], ids=["ragged", "too-few", "too-many"])
def test_a_times_header_that_does_not_match_the_items_is_ignored_not_a_bad_record(header: bytes) -> None:
    [record] = encode_routed({A: [item(1), item(2)]})
    [(_, arrived)] = decode_routed(record.value, header)
    assert [i.arrived_ms for i in arrived.items] == [None, None]


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
        decode_routed(record.value[:-3], record.arrived)


def test_a_routed_record_names_its_appservices_whatever_its_key() -> None:
    [record] = encode_routed({A: [item(1)], B: [item(2)]})
    assert [a for a, _ in decode_inbox_record(None, record.value)] == [A, B]


def test_an_outcome_belongs_to_the_appservice_in_its_key() -> None:
    assert decode_inbox_record(b"bridge-a", encode_outcome(TxnSucceeded(TxnID(7)))) == [(A, TxnSucceeded(TxnID(7)))]


@pytest.mark.parametrize("key", [None, b"", b"\xff\xfe"])
def test_an_outcome_without_a_readable_key_is_a_bad_record(key: bytes | None) -> None:
    with pytest.raises(BadRecord):
        decode_inbox_record(key, encode_outcome(Resume()))
