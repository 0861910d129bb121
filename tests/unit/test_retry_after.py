"""Retry-After: what an appservice asked for, parsed purely, bounded, and honoured by the machine."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from streams.backoff import backoff_ms
from streams.machine import (
    AppserviceState,
    Item,
    ItemKind,
    ItemsArrived,
    MachineConfig,
    ScheduleRetry,
    SourcePosition,
    TxnFailed,
    step,
)
from streams.matrix import TxnID
from streams.outcome import MAX_RETRY_AFTER_MS, HttpError, as_input, retry_after_ms
from streams.records import decode_inbox, encode_outcome

NOW_MS = 1_700_000_000_000


def http_date(unix_ms: int) -> str:
    return format_datetime(datetime.fromtimestamp(unix_ms / 1000, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("30", 30_000),
        (" 7 ", 7_000),
        ("0", 0),
        (http_date(NOW_MS + 45_000), 45_000),
        (http_date(NOW_MS - 45_000), 0),  # a date in the past: retry now (the backoff still applies)
        ("600", MAX_RETRY_AFTER_MS),
        ("9" * 5000, MAX_RETRY_AFTER_MS),
        (http_date(NOW_MS + 86_400_000), MAX_RETRY_AFTER_MS),
    ],
)
def test_retry_after_is_seconds_or_an_http_date_bounded_by_the_backoff_cap(header: str, expected: int) -> None:
    assert retry_after_ms(header, None, now_ms=NOW_MS) == expected


@pytest.mark.parametrize("header", ["-5", "1.5", "soon", "Wed, 99 Foo 2026 10:00:00 GMT", "²", ""])
def test_a_retry_after_that_is_neither_is_ignored(header: str) -> None:
    assert retry_after_ms(header, None, now_ms=NOW_MS) is None


def test_without_a_header_the_matrix_bodys_retry_after_ms_counts() -> None:
    body = {"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 2500}
    assert retry_after_ms(None, body, now_ms=NOW_MS) == 2500
    assert retry_after_ms("4", body, now_ms=NOW_MS) == 4000
    assert retry_after_ms(None, {"retry_after_ms": True}, now_ms=NOW_MS) is None
    assert retry_after_ms(None, {"retry_after_ms": 10**30}, now_ms=NOW_MS) == MAX_RETRY_AFTER_MS


def test_the_asked_delay_survives_the_trip_through_the_inbox() -> None:
    failed = as_input(HttpError(429, "M_LIMIT_EXCEEDED", MAX_RETRY_AFTER_MS), TxnID(5), jitter=0.5)
    assert decode_inbox(encode_outcome(failed), jitter=0.5) == failed


def inflight_state() -> tuple[AppserviceState, TxnID]:
    item = Item(ItemKind.EVENT, SourcePosition(0, 0), b"{}")
    state, _ = step(AppserviceState(), ItemsArrived((item,)), NOW_MS, MachineConfig())
    assert state.inflight is not None
    return state, state.inflight.txn_id


@pytest.mark.parametrize(
    ("retry_after", "expected_delay_ms"),
    [
        (None, 2000),  # the plain backoff (first retry: 2 units)
        (500, 2000),  # shorter than the backoff: the backoff wins
        (30_000, 30_000),  # longer: at least what was asked
        (MAX_RETRY_AFTER_MS, 512_000),
    ],
)
def test_the_next_attempt_waits_at_least_retry_after(retry_after: int | None, expected_delay_ms: int) -> None:
    state, txn_id = inflight_state()
    state, out = step(state, TxnFailed(txn_id, "HTTP 429", retry_after, 0.0), NOW_MS, MachineConfig())
    assert out[-1] == ScheduleRetry(txn_id, NOW_MS + expected_delay_ms, 1)
    assert state.retry_at_ms == NOW_MS + expected_delay_ms


def test_retry_after_is_capped_by_the_backoff_cap_in_the_configured_unit() -> None:
    assert backoff_ms(1, unit_ms=100, retry_after_ms=2000) == 2000
    assert backoff_ms(1, unit_ms=100, retry_after_ms=60_000) == 51_200
