"""Whether partitions this worker owned at some moment are still its own.

A send's outcome may be settled in-process only by the worker that owns the
appservice's partition, and only if it has owned it without a break since the
step that asked for the send: after a rebalance the partition may be another
worker's, which restored the state from the changelog and would never see a
change made here. Faust counts rebalances (``app.rebalancing_count``, raised
as soon as partitions are being revoked) and flags one in progress
(``app.rebalancing``, cleared once tables are recovered and streams resume).
With the eager protocol Faust's consumer uses, every rebalance revokes every
partition, so an unchanged count means an unbroken ownership.
"""

from __future__ import annotations

from typing import Any


class Ownership:
    def __init__(self, app: Any) -> None:
        self._app = app

    def epoch(self) -> int | None:
        """A token for "the partitions owned now"; None while a rebalance runs (owned partitions are unknown)."""
        return None if self._app.rebalancing else int(self._app.rebalancing_count)

    def unbroken(self, epoch: int | None) -> bool:
        """Whether the partitions owned at ``epoch`` are still owned, with no rebalance since."""
        return epoch is not None and epoch == self.epoch()
