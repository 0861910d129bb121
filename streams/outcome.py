"""What one HTTP attempt at an appservice came to: a closed set of outcomes.

The HTTP adapter (``agents.appservice_http``) turns every response and every
exception into exactly one of these; the state machine never sees an
exception. ``as_input`` maps an outcome onto the machine's vocabulary, and
``failure_reason`` onto the fixed labels of the failure metrics.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from streams.machine import TxnFailed, TxnSucceeded
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


def as_input(outcome: Outcome, txn_id: TxnID, *, jitter: float) -> TxnSucceeded | TxnFailed:
    """The machine input for ``outcome`` of sending ``txn_id``."""
    if isinstance(outcome, Delivered):
        return TxnSucceeded(txn_id)
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
