"""Whether partitions this worker owned at some moment are still its own.

A send's outcome may be settled in-process only by the worker that owns the
appservice's partition, and only if it has owned it without a break since the
step that asked for the send: after a rebalance the partition may be another
worker's, which restored the state from the changelog and would never see a
change made here. Faust counts rebalances (``app.rebalancing_count``, raised
as soon as partitions are being revoked); with the eager protocol Faust's
consumer uses, every rebalance revokes every partition, so an unchanged count
means an unbroken ownership. Between the revocation and the new assignment
nothing is owned for sure (``assigned`` is told when the assignment lands).

Faust's ``app.rebalancing`` flag is not used: it stays set until table
recovery ends, after Faust has already resumed the streams, so the first
batches of every generation (the resumes among them) would look unowned.
"""

from __future__ import annotations

from typing import Any, TypeGuard


class Ownership:
    def __init__(self, app: Any) -> None:
        self._app = app
        self._assigned_at: int | None = None

    def assigned(self) -> None:
        """The consumer's new assignment landed (Faust's ``on_partitions_assigned``)."""
        self._assigned_at = int(self._app.rebalancing_count)

    def epoch(self) -> int | None:
        """A token for "the partitions owned now"; None between a revocation and the next assignment."""
        count = int(self._app.rebalancing_count)
        return count if self._assigned_at == count else None

    def unbroken(self, epoch: int | None) -> TypeGuard[int]:
        """Whether the partitions owned at ``epoch`` are still owned, with no rebalance since."""
        return epoch is not None and epoch == self.epoch()
