"""Rate control for the load generator, as pure arithmetic.

The generator is open-loop: event number ``n`` (0-based) is due at
``n / rate`` seconds after the start, whatever the system under test does, so
a slow worker shows up as latency rather than as a lower offered rate.
"""

from __future__ import annotations

import math


def due(rate_per_s: float, elapsed_s: float, total: int | None = None) -> int:
    """How many events should have been sent ``elapsed_s`` after the start (event 0 is due at once).

    Raises:
        ValueError: a non-positive rate.
    """
    if rate_per_s <= 0:
        raise ValueError(f"rate must be positive, got {rate_per_s}")
    count = 0 if elapsed_s < 0 else math.floor(elapsed_s * rate_per_s) + 1
    return count if total is None else min(count, total)


def batch(rate_per_s: float, elapsed_s: float, sent: int, max_batch: int, total: int | None = None) -> int:
    """How many to send now to catch up, at most ``max_batch`` (bounds one burst after a stall)."""
    return max(0, min(max_batch, due(rate_per_s, elapsed_s, total) - sent))


def sleep_for(rate_per_s: float, elapsed_s: float, sent: int, max_sleep_s: float = 0.005) -> float:
    """Seconds until the next event (number ``sent``) is due, capped at ``max_sleep_s``, never negative."""
    next_at = sent / rate_per_s
    return max(0.0, min(max_sleep_s, next_at - elapsed_s))
