"""Inbox partitions gone quiet with records left: read them again from the committed offset.

Faust drops records it fetched around a rebalance: records its fetch loop
got before recovery's seek, a fetch it stops handing on when the generation
changes mid-way, records a stream skips while flow control is paused. The
position guard (``agents.positions``) finds such a drop when a later record
of the partition arrives past the hole. When none does (the dropped record
was the partition's last, such as the ``Resume`` every rebalance ends with),
the record would wait for the partition's next one, for good on a quiet
partition, and the group's committed offset with it: consumer lag reported
the partition one record behind for half a minute with every event
delivered.

A partition is stalled when no record of it reached the deliverer for
``quiet_s``, it is not being re-read, and its log ends past the committed
offset. The shell then seeks it to the committed offset, as a rebalance
would: records up to the guard's position come back as replays (acked
through the position), the rest is delivered.

Pure: partitions, offsets and a clock in, seeks out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

# Longer than the commit interval (1 s) a few times over, so a partition whose
# last records were just processed has been committed, and than a batch takes
# under a backlog, so records queued behind other partitions are not taken
# for dropped. A false alarm costs a re-read, never a record.
QUIET_S = 5.0


class StallWatch:
    """When each owned inbox partition was last heard of; which ones to read again."""

    def __init__(self, quiet_s: float = QUIET_S) -> None:
        self.quiet_s = quiet_s
        # partition → when a record of it last reached the deliverer, or it was assigned or sought
        self._heard: dict[int, float] = {}

    def owned(self, partitions: Iterable[int], now: float) -> None:
        """The partitions owned from now on (an assignment, or a rebalance still under way): each is
        heard of now, so none is stalled before ``quiet_s`` of its own."""
        self._heard = dict.fromkeys(partitions, now)

    def arrived(self, partition: int, now: float) -> None:
        """A record of ``partition`` reached the deliverer."""
        if partition in self._heard:
            self._heard[partition] = now

    def stalled(
        self,
        now: float,
        ends: Mapping[int, int | None],
        committed: Mapping[int, int | None],
        rereading: Collection[int],
    ) -> list[tuple[int, int]]:
        """(partition, offset to seek to) of each stalled partition, which is then heard of now.

        ``ends``: each partition's log end offset as last fetched (None: not known yet).
        ``committed``: the group's committed offset (None: nothing committed, read from 0).
        ``rereading``: partitions the position guard sought back and waits for.
        """
        due = []
        for partition, heard in self._heard.items():
            if now - heard < self.quiet_s or partition in rereading:
                continue
            end = ends.get(partition)
            start = committed.get(partition) or 0
            if end is not None and end > start:
                due.append((partition, start))
                self._heard[partition] = now
        return due


__all__ = ["QUIET_S", "StallWatch"]
