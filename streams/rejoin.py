"""Whether the router rejoins its group with a new consumer after librdkafka declared its consumer dead.

librdkafka has one fatal error for a consumer: a static member (``group.instance.id``)
fenced, ``FENCED_INSTANCE_ID``; from then on ``poll`` returns only ``_FATAL``. On the
three-broker cluster a node kill fenced the router's static member with no other worker
holding its instance id, most likely because the coordinator moving with the node lost a
join's response: the group gave the instance id a new member id the consumer never
learned, and its next request under the old one was refused (apache/kafka#23542 describes
the same race in the new protocol). A new consumer with the same instance id rejoins and gets the partitions
back without a rebalance of the others; it resumes from the committed offsets, and what
it routes again carries its input position, which the deliverer drops as applied.

Two workers really sharing an instance id would fence each other for ever, each rejoin
fencing the other: after ``REJOIN_LIMIT`` deaths within ``REJOIN_WINDOW_S`` the router
gives up (the worker exits 70, naming the setting).

Pure: time is an input (``time.monotonic()`` in the shell).
"""

from __future__ import annotations

from dataclasses import dataclass

REJOIN_LIMIT = 3  # rejoins within the window; the next death gives up
REJOIN_WINDOW_S = 300.0


@dataclass(frozen=True)
class Rejoin:
    """Close the dead consumer and subscribe a new one; keep ``deaths`` for the next decision."""

    deaths: tuple[float, ...]  # times of the deaths within the window, this one last


@dataclass(frozen=True)
class GiveUp:
    """Too many deaths in a row to be the failover race: end the worker."""

    deaths: int
    window_s: float


def after_consumer_died(
    deaths: tuple[float, ...], now: float, limit: int = REJOIN_LIMIT, window_s: float = REJOIN_WINDOW_S
) -> Rejoin | GiveUp:
    """Decide what follows a consumer's death at ``now``, given the earlier ones (``Rejoin.deaths``)."""
    recent = (*(t for t in deaths if now - t < window_s), now)
    if len(recent) > limit:
        return GiveUp(len(recent), window_s)
    return Rejoin(recent)
