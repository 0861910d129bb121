"""A dead letter says why (from a fixed set), what exactly, where it was read, and how big it was."""

from __future__ import annotations

from streams.dead_letter import MAX_VALUE_BYTES, Reason, dead_letter


def test_a_dead_letter_says_why_what_where_and_how_big() -> None:
    letter = dead_letter("matrix.events", 3, 42, b"not json", Reason.MALFORMED, "not JSON")
    assert letter.value == b"not json"
    assert letter.headers == [
        ("reason", b"malformed"),
        ("detail", b"not JSON"),
        ("source", b"matrix.events[3]@42"),
        ("size", b"8"),
    ]


def test_a_value_too_large_to_dead_letter_whole_keeps_its_head_and_says_so() -> None:
    value = b"{" + b"x" * (2 * MAX_VALUE_BYTES)
    letter = dead_letter("matrix.events", 0, 7, value, Reason.TOO_LARGE, "too big")
    assert letter.value == value[:MAX_VALUE_BYTES]
    assert ("size", str(len(value)).encode()) in letter.headers
    assert ("truncated", b"true") in letter.headers


def test_a_value_of_exactly_the_limit_is_kept_whole() -> None:
    value = b"x" * MAX_VALUE_BYTES
    letter = dead_letter("t", 0, 0, value, Reason.REFUSED, "refused")
    assert letter.value == value
    assert all(name != "truncated" for name, _ in letter.headers)


def test_a_record_without_a_value_is_dead_lettered_with_size_zero() -> None:
    letter = dead_letter("t", 1, 2, None, Reason.MALFORMED, "record has no value")
    assert letter.value is None
    assert ("size", b"0") in letter.headers
