"""When a send's outcome may be settled: after the inbox records that were there when it came.

A worker settles its sends' outcomes in-process (no trip through Kafka), but
not at once. An outcome waits until the deliverer has stepped every record
its appservice's inbox partition held when the outcome came (up to the
partition's end offset at that moment), so the appservice's next txn carries
every event that had reached the worker by then. That is the order the
outcome would have had as an inbox record behind those events, without the
record: one produce, one fetch and a fetch wait less per txn.

Settling at once instead lets outcomes overtake a backlog: each next txn
takes only what was stepped so far, txns shrink, the txn rate and its cost
grow, the backlog grows with them (measured: docs/decisions/settle-in-process.md).

Pure: offsets and a clock in, outcomes out.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# How long an outcome waits for its partition's records at most. The records
# come within milliseconds unless the worker is far behind; this bounds the
# wait if the offset it waits for is never stepped (a position the deliverer
# skips, an end offset that was stale).
MAX_WAIT_MS = 1_000


@dataclass(frozen=True)
class _Waiting(Generic[T]):
    outcome: T
    up_to: int  # the last offset to be stepped first
    since_ms: int


class Settlement(Generic[T]):
    def __init__(self, max_wait_ms: int = MAX_WAIT_MS) -> None:
        self._max_wait_ms = max_wait_ms
        self._waiting: dict[int, list[_Waiting[T]]] = defaultdict(list)
        self._stepped: dict[int, int] = {}

    def arrived(self, partition: int, outcome: T, end_offset: int | None, now_ms: int) -> bool:
        """Whether ``outcome`` may be settled now; if not, it waits for ``stepped``.

        ``end_offset`` is the partition's log end (the next offset to be
        written) as the consumer last heard it; None when unknown.
        """
        stepped = self._stepped.get(partition)
        if end_offset is None or stepped is None or stepped >= end_offset - 1:
            return True
        self._waiting[partition].append(_Waiting(outcome, end_offset - 1, now_ms))
        return False

    def stepped(self, partition: int, offset: int) -> list[T]:
        """The deliverer stepped the partition's records up to ``offset``: the outcomes now free, in arrival order."""
        if offset > self._stepped.get(partition, -1):
            self._stepped[partition] = offset
        waiting = self._waiting.get(partition)
        if not waiting:
            return []
        free = [w.outcome for w in waiting if w.up_to <= offset]
        if free:
            waiting[:] = [w for w in waiting if w.up_to > offset]
        return free

    def overdue(self, now_ms: int) -> list[T]:
        """Outcomes that waited ``max_wait_ms`` or more: settle them anyway."""
        free: list[T] = []
        for waiting in self._waiting.values():
            if waiting and now_ms - waiting[0].since_ms >= self._max_wait_ms:
                free.extend(w.outcome for w in waiting if now_ms - w.since_ms >= self._max_wait_ms)
                waiting[:] = [w for w in waiting if now_ms - w.since_ms < self._max_wait_ms]
        return free

    def waiting(self) -> int:
        return sum(len(w) for w in self._waiting.values())
