"""The chaos check's verdict counts each fault it is shown, and nothing in a clean delivery."""

from __future__ import annotations

import orjson

from tests.chaos.ledger import Ledger, Request, verify


def body(*event_ids: str) -> bytes:
    return orjson.dumps({"events": [{"event_id": e} for e in event_ids]})


def ledger() -> Ledger:
    book = Ledger()
    for n in range(4):
        book.add("a", "!r1", f"$r1-{n}")
    book.add("a", "!r2", "$r2-0")
    return book


def test_a_clean_delivery_with_a_retry_is_clean() -> None:
    first = body("$r1-0", "$r2-0")
    received = {"a": [Request(1, first), Request(1, first), Request(2, body("$r1-1", "$r1-2", "$r1-3"))]}
    verdict = verify(ledger(), received)
    assert verdict.clean(), verdict
    assert (verdict.produced, verdict.delivered, verdict.requests) == (5, 5, 3)


def test_each_fault_is_counted() -> None:
    received = {
        "a": [
            Request(5, body("$r1-1", "$r1-0")),  # reordered within a room
            Request(5, body("$r1-1")),  # the same id with another body
            Request(4, body("$r1-1", "$x")),  # id went backwards, a duplicate, an unexpected event
        ]
    }
    verdict = verify(ledger(), received)
    assert (verdict.reordered, verdict.conflicting_repeats, verdict.txn_ids_backwards) == (1, 1, 1)
    assert (verdict.duplicated, verdict.unexpected, verdict.lost) == (1, 1, 3)
    assert not verdict.clean()


def test_rooms_are_ordered_independently() -> None:
    received = {"a": [Request(1, body("$r2-0", "$r1-0", "$r1-1", "$r1-2", "$r1-3"))]}
    assert verify(ledger(), received).clean()
