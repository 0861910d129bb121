"""What the appservices received, checked against the ledger of what was produced.

Pure: the chaos run (``tests.chaos.run``) fills a ``Ledger`` and gives it what
each appservice received, request by request; ``verify`` counts every way
delivery could have gone wrong. A clean run has every count at zero.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson


@dataclass(frozen=True)
class Request:
    """One PUT an appservice answered (or was sent), in arrival order."""

    txn_id: int
    body: bytes


@dataclass
class Ledger:
    """Every event produced, per appservice and room, in production order."""

    produced: dict[str, dict[str, list[str]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))

    def add(self, appservice_id: str, room_id: str, event_id: str) -> None:
        self.produced[appservice_id][room_id].append(event_id)

    def count(self) -> int:
        return sum(len(ids) for rooms in self.produced.values() for ids in rooms.values())


@dataclass(frozen=True)
class Verdict:
    produced: int
    delivered: int  # distinct events received
    lost: int  # produced, never received
    unexpected: int  # received, never produced for that appservice
    duplicated: int  # received in two different txns
    reordered: int  # per appservice and room: received before an event produced earlier
    txn_ids_backwards: int  # a request whose id is below one already sent
    conflicting_repeats: int  # a txn id sent again with another body
    requests: int

    def clean(self) -> bool:
        return not (
            self.lost
            or self.unexpected
            or self.duplicated
            or self.reordered
            or self.txn_ids_backwards
            or self.conflicting_repeats
        )


def verify(ledger: Ledger, received: dict[str, Sequence[Request]]) -> Verdict:
    """Count losses, duplicates, reorderings and txn-id faults; never raises on bad deliveries."""
    lost = unexpected = duplicated = reordered = backwards = conflicting = requests = delivered = 0
    for appservice_id in set(ledger.produced) | set(received):
        expected = ledger.produced.get(appservice_id, {})
        room_of = {event_id: room for room, ids in expected.items() for event_id in ids}
        position = {event_id: n for ids in expected.values() for n, event_id in enumerate(ids)}
        bodies: dict[int, bytes] = {}
        counted: set[int] = set()
        highest = -1
        seen: set[str] = set()
        last_in_room: dict[str, int] = {}
        for request in received.get(appservice_id, ()):
            requests += 1
            if request.txn_id < highest:
                backwards += 1
            highest = max(highest, request.txn_id)
            if bodies.setdefault(request.txn_id, request.body) != request.body:
                conflicting += 1
            if request.txn_id in counted:
                continue  # a retry of a txn already counted
            counted.add(request.txn_id)
            for event_id in _event_ids(request.body):
                if event_id in seen:
                    duplicated += 1
                    continue
                seen.add(event_id)
                room = room_of.get(event_id)
                if room is None:
                    unexpected += 1
                    continue
                if position[event_id] < last_in_room.get(room, -1):
                    reordered += 1
                last_in_room[room] = max(position[event_id], last_in_room.get(room, -1))
        delivered += len(seen)
        lost += sum(1 for event_id in room_of if event_id not in seen)
    return Verdict(
        produced=ledger.count(),
        delivered=delivered,
        lost=lost,
        unexpected=unexpected,
        duplicated=duplicated,
        reordered=reordered,
        txn_ids_backwards=backwards,
        conflicting_repeats=conflicting,
        requests=requests,
    )


def _event_ids(body: bytes) -> Iterable[str]:
    return [event["event_id"] for event in orjson.loads(body).get("events", [])]
