"""Retry delays for a DOWN appservice: a pure function of the attempt number.

Synapse waits 2, 4, 8 … 512 seconds between retries of the same transaction
(2^n for n = 1..9, then 512 forever). We keep that schedule, measured in a
configurable *unit* (1 s in production, milliseconds in tests), add up to 10 %
jitter so that many appservices behind one failed proxy do not retry in lock
step, and honour an appservice's ``Retry-After`` when it asks for longer.
"""

from __future__ import annotations

MAX_EXPONENT = 9
JITTER_FRACTION = 0.1


def backoff_ms(
    attempt: int,
    *,
    unit_ms: int,
    jitter: float = 0.0,
    retry_after_ms: int | None = None,
) -> int:
    """Milliseconds to wait before retry number ``attempt`` (1 = first retry).

    ``jitter`` is a number in [0, 1) supplied by the caller (randomness is an
    input, so this stays deterministic); it stretches the delay by up to 10 %.

    Raises:
        ValueError: ``attempt`` < 1, ``unit_ms`` < 1 or ``jitter`` outside [0, 1).
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if unit_ms < 1:
        raise ValueError(f"unit_ms must be >= 1, got {unit_ms}")
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    base = (1 << min(attempt, MAX_EXPONENT)) * unit_ms
    delay = base + int(base * JITTER_FRACTION * jitter)
    if retry_after_ms is not None and retry_after_ms > delay:
        # Never wait longer than the cap, whatever a server asks for.
        return min(retry_after_ms, (1 << MAX_EXPONENT) * unit_ms)
    return delay
