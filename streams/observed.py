"""What a worker tells its operator about itself, decided without I/O.

The shell (``agents.metrics``) turns these into Prometheus samples; the
decisions live here so they are tested without a registry, a thread or Kafka:

* ``OwnedAppservices``: the latest machine state of every appservice whose
  inbox partition this worker owns, written once per step (one dict store)
  and read by the scrape on another thread. Only the owner exports an
  appservice: a revocation drops its partitions' appservices, and steps of
  partitions not owned are not kept.
* ``view``: the gauges of one appservice from its ``AppserviceState`` and
  when its oldest undelivered item arrived, which the step read from the
  stored state (``StoredAppservice.oldest_ms``: its input record's timestamp),
  so it is the same whichever worker owns the appservice.
* ``router_lag`` and ``group_lag``: consumer lag per partition, from
  librdkafka's statistics (router) and from highwater and committed offsets;
  ``router_committed``: where each of the router's partitions resumes.
* ``OldestUnconsumed``: the lag in seconds, i.e. the age of the record at each
  lagging partition's committed offset: which partitions' records to read
  (the shell reads them), and the Kafka timestamps read.
* ``readiness``: why a worker is not ready to take traffic, if it is not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streams.machine import KINDS, AppserviceState, Counts, Phase, counts
from streams.matrix import AppserviceID


@dataclass(frozen=True)
class AppserviceView:
    """The exported gauges of one appservice."""

    up: bool
    phase: Phase
    backlog: Counts  # items accepted and not yet delivered, per kind: parked plus in flight
    down_for_s: float  # 0 while up
    attempt: int  # failed attempts of the transaction in flight
    oldest_s: float  # age of the oldest item not yet delivered; 0 when none


def _undelivered_counts(state: AppserviceState) -> Counts:
    # In transit: the txn in flight, or all a refused txn delivered in slices has left.
    return counts([queued + sent for queued, sent in zip(state.queued, state.in_transit, strict=True)])


def view(state: AppserviceState, now_ms: int, oldest_ms: int | None = None) -> AppserviceView:
    """The gauges of ``state`` at ``now_ms``; ``oldest_ms``: when its oldest undelivered item arrived."""
    down_since = state.down_since_ms
    down_for_s = 0.0 if down_since is None else max(0, now_ms - down_since) / 1000
    oldest_s = 0.0 if oldest_ms is None else max(0, now_ms - oldest_ms) / 1000
    return AppserviceView(
        not state.phase.is_down, state.phase, _undelivered_counts(state), down_for_s, state.attempt, oldest_s
    )


def undelivered(state: AppserviceState) -> int:
    """Items accepted and not yet delivered, all kinds: parked and in flight."""
    return sum(_undelivered_counts(state))


class OwnedAppservices:
    """The latest state of each appservice of the inbox partitions owned now.

    Written from the event loop (``stepped``, ``assigned``, ``revoked``), read
    from the metrics thread (``snapshot``): every read and write is a single
    dict or set operation, which the interpreter does atomically.
    """

    def __init__(self) -> None:
        self._owned: frozenset[int] = frozenset()
        # appservice → (inbox partition, state, when its oldest undelivered item arrived)
        self._states: dict[AppserviceID, tuple[int, AppserviceState, int | None]] = {}

    def assigned(self, partitions: Iterable[int]) -> None:
        """The inbox partitions owned from now on (a new assignment landed)."""
        self._owned = frozenset(partitions)
        self._drop_unowned()

    def revoked(self) -> None:
        """Nothing is owned for sure until the next assignment: every appservice's series goes."""
        self._owned = frozenset()
        self._states = {}

    def stepped(
        self, appservice_id: AppserviceID, partition: int, state: AppserviceState, oldest_ms: int | None
    ) -> None:
        """The state an appservice's step left and when its oldest undelivered item arrived (None: none is).

        Kept only while its partition is owned.
        """
        if partition in self._owned:
            self._states[appservice_id] = (partition, state, oldest_ms)

    def _drop_unowned(self) -> None:
        owned = self._owned
        self._states = {a: entry for a, entry in self._states.copy().items() if entry[0] in owned}

    def inflight(self, appservice_id: AppserviceID, txn_id: int) -> Counts | None:
        """The item counts of ``txn_id`` if it is the appservice's transaction in flight here."""
        entry = self._states.get(appservice_id)
        if entry is None or entry[1].inflight is None or entry[1].inflight.txn_id != txn_id:
            return None
        return entry[1].inflight.counts

    def owns(self, appservice_id: AppserviceID) -> bool:
        return appservice_id in self._states

    def snapshot(self) -> list[tuple[AppserviceID, AppserviceState, int | None]]:
        """Each owned appservice's latest state and when its oldest undelivered item arrived."""
        return [(a, state, oldest) for a, (_, state, oldest) in self._states.copy().items()]


def router_lag(stats: Mapping[str, Any], topic: str, assigned: Iterable[int]) -> dict[int, int]:
    """Records behind on each of ``assigned``'s partitions of ``topic``, from a librdkafka statistics document.

    librdkafka reports ``consumer_lag`` (end offset minus committed offset) per
    partition, -1 while either is unknown. A partition the group never
    committed counts from offset 0, as ``group_lag`` does; one whose end is
    not known yet is left out, as are partitions not ``assigned`` (librdkafka
    keeps reporting some it no longer consumes).
    """
    partitions = stats.get("topics", {}).get(topic, {}).get("partitions", {})
    lags: dict[int, int] = {}
    for partition in assigned:
        reported = partitions.get(str(partition), {})
        lag = reported.get("consumer_lag")
        if isinstance(lag, int) and lag >= 0:
            lags[partition] = lag
            continue
        end, committed = reported.get("ls_offset"), reported.get("committed_offset")
        if isinstance(end, int) and end >= 0 and isinstance(committed, int) and committed < 0:
            lags[partition] = end
    return lags


def group_lag(highwater: int | None, committed: int | None) -> int | None:
    """Records behind in a partition: its end offset minus the group's committed offset.

    A partition the group never committed counts from offset 0 (the group reads
    from the earliest offset, and the log start is not known here: after
    retention deleted records this overstates the lag of a partition nobody
    ever committed, which is itself worth a look). None while the end is unknown.
    """
    if highwater is None or highwater < 0:
        return None
    if committed is None or committed < 0:
        return highwater
    return max(0, highwater - committed)


# A partition the group never committed resumes at the log start: librdkafka's OFFSET_BEGINNING.
FROM_START = -2


def router_committed(stats: Mapping[str, Any], topic: str, assigned: Iterable[int]) -> dict[int, int]:
    """Where the router resumes on each of ``assigned``: its committed offset, else ``FROM_START``."""
    partitions = stats.get("topics", {}).get(topic, {}).get("partitions", {})
    offsets: dict[int, int] = {}
    for partition in assigned:
        committed = partitions.get(str(partition), {}).get("committed_offset")
        if isinstance(committed, int):
            offsets[partition] = committed if committed >= 0 else FROM_START
    return offsets


# Reads of a record's timestamp per lag interval at most: a worker owns a few dozen partitions,
# and a reading is one small fetch, so this bounds the cost, not the usual case.
MAX_PROBES = 64

Partition = tuple[str, int]  # topic, partition


class OldestUnconsumed:
    """When the oldest record not yet committed was written, per lagging partition: the lag in seconds.

    The age of the record at a partition's committed offset (now minus its
    Kafka timestamp) says how far behind the group is in time, which records
    cannot (a record a minute is not a record a millisecond). Reading it is
    I/O, so ``wanted`` names what to read: partitions behind whose committed
    offset moved since their record was read, most records behind first,
    at most ``MAX_PROBES``. A partition not moving costs nothing after its first
    read; one caught up (lag 0) is forgotten and has age 0.

    Between readings the age is of the record read last, so while the group
    moves it overstates by at most one lag interval's progress.

    Written by the thread that reads (``wanted``, ``found``) and by the loop
    (``forget``), read by the scrape (``age_s``): each is one dict operation
    or a swap of the whole dict.
    """

    def __init__(self) -> None:
        # (group, topic, partition) → (offset read at, Kafka timestamp of the record found there, ms)
        self._read: dict[tuple[str, str, int], tuple[int, int]] = {}

    def wanted(
        self, group: str, behind: Mapping[Partition, tuple[int, int]], limit: int = MAX_PROBES
    ) -> list[tuple[str, int, int]]:
        """``behind``: (records behind, committed offset) of every partition ``group`` consumes here.

        Forgets the group's partitions no longer behind, and returns the
        (topic, partition, offset) whose record to read.
        """
        lagging = {key: committed for key, (records, committed) in behind.items() if records > 0}
        self._read = {key: read for key, read in self._read.copy().items() if key[0] != group or key[1:] in lagging}
        stale = [key for key, committed in lagging.items() if self._read.get((group, *key), (None,))[0] != committed]
        stale.sort(key=lambda key: -behind[key][0])
        return [(topic, partition, lagging[(topic, partition)]) for topic, partition in stale[:limit]]

    def found(self, group: str, topic: str, partition: int, offset: int, timestamp_ms: int) -> None:
        """The oldest record not yet committed, read at ``offset``, was written at ``timestamp_ms``."""
        self._read[(group, topic, partition)] = (offset, timestamp_ms)

    def forget(self, group: str, topic: str, keep: Iterable[int]) -> None:
        """``group`` consumes only ``keep`` of ``topic`` here now: a partition's next owner reads it again."""
        kept = set(keep)
        self._read = {
            key: read for key, read in self._read.copy().items() if key[0] != group or key[1] != topic or key[2] in kept
        }

    def age_s(self, group: str, topic: str, partition: int, records: int, now_ms: int) -> float | None:
        """The lag in seconds of a partition ``records`` behind: 0 when none, None while not read yet."""
        if records <= 0:
            return 0.0
        read = self._read.get((group, topic, partition))
        if read is None:
            return None
        return max(0, now_ms - read[1]) / 1000  # a producer's clock ahead of ours gives 0, not a negative age


def readiness(*, router_started: bool, router_alive: bool, assigned: bool, rebalancing: bool) -> list[str]:
    """Why the worker is not ready (empty: ready)."""
    reasons = []
    if not router_started:
        reasons.append("router not started")
    elif not router_alive:
        reasons.append("router thread ended")
    if not assigned:
        reasons.append("no partition assignment")
    if rebalancing:
        reasons.append("rebalancing")
    return reasons


KIND_LABELS = {kind: kind.name.lower() for kind in KINDS}

__all__ = [
    "FROM_START",
    "KIND_LABELS",
    "MAX_PROBES",
    "AppserviceView",
    "OldestUnconsumed",
    "OwnedAppservices",
    "group_lag",
    "readiness",
    "router_committed",
    "router_lag",
    "undelivered",
    "view",
]
