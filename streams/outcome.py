"""What one HTTP attempt at an appservice came to: a closed set of outcomes.

The HTTP adapter (``agents.appservice_http``) turns every response and every
exception into exactly one of these; the state machine never sees an
exception. ``as_input`` maps an outcome onto the machine's vocabulary.
"""

from __future__ import annotations

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
