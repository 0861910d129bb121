"""librdkafka's repeated log lines: the first passes, repeats are dropped for a window, then counted."""

from __future__ import annotations

import logging

from agents.kafka_logging import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("librdkafka", logging.ERROR, __file__, 1, message, (), None)


def test_a_line_repeated_with_other_numbers_passes_once_per_window_then_says_how_many_were_dropped() -> None:
    clock = Clock()
    repeats = RepeatFilter(window_s=60, clock=clock)
    line = "127.0.0.1:9999/bootstrap: Connect to ipv4#127.0.0.1:9999 failed: Connection refused (after {}ms)"
    assert repeats.filter(record(line.format(0)))
    assert [repeats.filter(record(line.format(n))) for n in range(1, 578)] == [False] * 577
    clock.now = 61.0
    later = record(line.format(3))
    assert repeats.filter(later)
    assert later.getMessage().endswith("(and 577 more like it in the last 60 s)")


def test_different_lines_pass_independently() -> None:
    repeats = RepeatFilter(window_s=60, clock=Clock())
    assert repeats.filter(record("broker down"))
    assert repeats.filter(record("coordinator moved"))
    assert not repeats.filter(record("broker down"))
