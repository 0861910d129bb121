"""bench.pacing: an open-loop schedule, event n due at n / rate seconds."""

from __future__ import annotations

import pytest

from bench.pacing import batch, due, sleep_for


@pytest.mark.parametrize(
    ("rate", "elapsed", "expected"),
    [
        (2000.0, 0.0, 1),  # event 0 is due at once
        (2000.0, 0.0004, 1),
        (2000.0, 0.0005, 2),
        (2000.0, 1.0, 2001),
        (10.0, 0.95, 10),
        (10.0, -0.1, 0),
    ],
)
def test_due_counts_events_whose_time_has_come(rate: float, elapsed: float, expected: int) -> None:
    assert due(rate, elapsed) == expected


def test_due_stops_at_the_total_and_refuses_a_non_positive_rate() -> None:
    assert due(1000.0, 60.0, total=500) == 500
    with pytest.raises(ValueError):
        due(0.0, 1.0)


def test_batch_catches_up_but_never_more_than_max_batch() -> None:
    assert batch(1000.0, 0.0105, sent=5, max_batch=100) == 6  # 11 due
    assert batch(1000.0, 5.0, sent=0, max_batch=100) == 100  # after a stall: bounded burst
    assert batch(1000.0, 0.001, sent=50, max_batch=100) == 0  # ahead of schedule


def test_a_simulated_run_offers_exactly_rate_times_duration() -> None:
    rate, duration, total = 2000.0, 3.0, 6000
    sent, t = 0, 0.0
    while sent < total:
        sent += batch(rate, t, sent, max_batch=1000, total=total)
        t += max(sleep_for(rate, t, sent, max_sleep_s=0.001), 0.0001)
    assert sent == total
    assert t == pytest.approx(duration, abs=0.002)


def test_sleep_for_waits_for_the_next_event_capped_and_never_negative() -> None:
    assert sleep_for(100.0, 0.0, sent=1, max_sleep_s=1.0) == pytest.approx(0.01)
    assert sleep_for(100.0, 0.0, sent=10, max_sleep_s=0.005) == 0.005
    assert sleep_for(100.0, 1.0, sent=10) == 0.0
