"""What one HTTP attempt at an appservice came to: a closed set of outcomes.

The HTTP adapter (``agents.appservice_http``) turns every response and every
exception into exactly one of these; the state machine never sees an
exception. ``as_input`` maps an outcome onto the machine's vocabulary, and
``failure_reason`` onto the fixed labels of the failure metrics.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from streams.machine import TxnFailed, TxnSucceeded, TxnTooLarge
from streams.matrix import TxnID


@dataclass(frozen=True)
class Delivered:
    status: int


@dataclass(frozen=True)
class HttpError:
    """A response that is not success: a non-2xx status, or 2xx without a JSON body."""

    status: int
    errcode: str | None = None
    retry_after_ms: int | None = None
    body: str | None = None  # kept for pings, whose error answer quotes it

    def describe(self) -> str:
        return f"HTTP {self.status}" + (f" {self.errcode}" if self.errcode else "")


@dataclass(frozen=True)
class TimedOut:
    phase: str  # "connect" or "response"

    def describe(self) -> str:
        return f"{self.phase} timed out"


@dataclass(frozen=True)
class ConnectFailed:
    detail: str

    def describe(self) -> str:
        return f"connection failed: {self.detail}"


Outcome = Delivered | HttpError | TimedOut | ConnectFailed

# The longest wait an appservice may ask for: the backoff's own cap (2^9 s).
# A larger value is cut here, so no input or inbox record carries an absurd
# (or, beyond 2^63, unencodable) delay.
MAX_RETRY_AFTER_MS = 512_000


def retry_after_ms(header: str | None, body: object, *, now_ms: int) -> int | None:
    """How long an appservice asked us to wait, in ms, bounded to ``MAX_RETRY_AFTER_MS``; None if it did not.

    ``header`` is the ``Retry-After`` value: delay-seconds or an HTTP-date
    (RFC 9110 §10.2.3; a date in the past means 0). Without a valid header,
    the Matrix error body's ``retry_after_ms`` (``M_LIMIT_EXCEEDED``) counts.
    ``now_ms`` (Unix time) is an input: this stays pure.
    """
    value = _header_ms(header.strip(), now_ms) if header else None
    if value is None and isinstance(body, dict):
        field = body.get("retry_after_ms")
        if isinstance(field, int) and not isinstance(field, bool) and field >= 0:
            value = field
    return None if value is None else min(value, MAX_RETRY_AFTER_MS)


def _header_ms(header: str, now_ms: int) -> int | None:
    if header.isascii() and header.isdigit():
        return int(header) * 1000 if len(header) <= 9 else MAX_RETRY_AFTER_MS  # int() of 5,000 digits raises
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None  # an HTTP-date is always GMT; a date without a zone is not one
    return max(0, int(when.timestamp() * 1000) - now_ms)


# Answers that say the transaction itself is too large: resending it as it is can never succeed.
TOO_LARGE = 413


def as_input(outcome: Outcome, txn_id: TxnID, *, jitter: float) -> TxnSucceeded | TxnFailed | TxnTooLarge:
    """The machine input for ``outcome`` of sending ``txn_id``."""
    if isinstance(outcome, Delivered):
        return TxnSucceeded(txn_id)
    if isinstance(outcome, HttpError) and outcome.status == TOO_LARGE:
        return TxnTooLarge(txn_id, outcome.describe())
    retry_after = outcome.retry_after_ms if isinstance(outcome, HttpError) else None
    return TxnFailed(txn_id, outcome.describe(), retry_after, jitter)


class FailureReason(enum.Enum):
    """Why a transaction attempt failed, as a metric label: a fixed set, never free text."""

    CLIENT_ERROR = "4xx"
    SERVER_ERROR = "5xx"
    TIMEOUT = "timeout"
    CONNECT = "connect"
    BAD_RESPONSE = "bad_response"  # 2xx without a JSON body, or a status neither 2xx, 4xx nor 5xx
    INTERNAL = "internal"  # the worker broke while sending (our bug, not the appservice's)


def failure_reason(outcome: Outcome | None) -> FailureReason | None:
    """The label for a failed attempt; None for a delivered one. ``None`` in: the worker broke while sending."""
    if outcome is None:
        return FailureReason.INTERNAL
    if isinstance(outcome, Delivered):
        return None
    if isinstance(outcome, TimedOut):
        return FailureReason.TIMEOUT
    if isinstance(outcome, ConnectFailed):
        return FailureReason.CONNECT
    if 400 <= outcome.status < 500:
        return FailureReason.CLIENT_ERROR
    if 500 <= outcome.status < 600:
        return FailureReason.SERVER_ERROR
    return FailureReason.BAD_RESPONSE
