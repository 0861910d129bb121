"""Inbox records: many items of one appservice in as few records as fit."""

from __future__ import annotations

import pytest

from streams.errors import BadRecord
from streams.machine import Item, ItemKind, ItemsArrived, SourcePosition
from streams.records import MAX_BATCH_BYTES, decode_inbox, encode_items


def item(n: int, size: int = 10, kind: ItemKind = ItemKind.EVENT) -> Item:
    return Item(kind, SourcePosition(n % 3, n), b"x" * size)


def test_a_batch_of_items_round_trips_in_order() -> None:
    items = [item(0), item(1, kind=ItemKind.EPHEMERAL), item(2, size=0), item(3, kind=ItemKind.DEVICE)]
    [record] = encode_items(items)
    assert decode_inbox(record) == ItemsArrived(tuple(items))


def test_items_are_split_across_records_under_the_size_cap_keeping_order() -> None:
    items = [item(n, size=100_000) for n in range(25)]
    records = encode_items(items)
    assert len(records) > 1 and all(len(r) <= MAX_BATCH_BYTES for r in records)
    decoded = [i for r in records for i in decode_inbox(r).items]  # type: ignore[union-attr]
    assert decoded == items


def test_no_items_make_no_record() -> None:
    assert encode_items([]) == []


def test_a_truncated_batch_is_a_bad_record() -> None:
    [record] = encode_items([item(1)])
    with pytest.raises(BadRecord):
        decode_inbox(record[:-3])
