"""The worker's Prometheus metrics: one registry per worker, prefix ``appservice_streams_``.

Counters are counted where things happen (a send's outcome, a dead letter, a
rebalance) and labelled by appservice ID at most: never by room, user or txn.
Gauges of state are read at scrape time, on the metrics thread, from what the
worker keeps anyway (``streams.observed``): the deliverer's per-step cost is
one dict store, and a scrape costs nothing between scrapes.

Only the owner of an appservice's inbox partition exports its ``appservice_*``
gauges, and only the owner of a partition exports its ``consumer_lag`` and
``consumer_lag_seconds``: a revocation drops them (no stale series after a
rebalance).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

import orjson
from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.dead_letter import Reason
from streams.delivery import Send
from streams.machine import KINDS, Phase
from streams.matrix import AppserviceID
from streams.observed import (
    KIND_LABELS,
    OldestUnconsumed,
    OwnedAppservices,
    Partition,
    router_committed,
    router_lag,
    view,
)
from streams.outcome import FailureReason, HttpError, Outcome, failure_reason

log = logging.getLogger(__name__)

PREFIX = "appservice_streams_"
# Seconds; Synapse's own appservice timings reach 60 s (the response timeout).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PHASES = tuple(Phase)


class _AppserviceCounters:
    """One appservice's counter children, resolved once (``labels()`` takes a lock and a dict lookup)."""

    __slots__ = ("duration", "failed", "items", "retries", "sent")

    def __init__(self, metrics: Metrics, appservice_id: AppserviceID) -> None:
        self.sent = metrics.transactions_sent.labels(appservice_id)
        self.failed = {r: metrics.transactions_failed.labels(appservice_id, r.value) for r in FailureReason}
        self.items = [metrics.items_sent.labels(appservice_id, KIND_LABELS[kind]) for kind in KINDS]
        self.retries = metrics.retries.labels(appservice_id)
        self.duration = metrics.duration.labels(appservice_id)


class Metrics:
    """Every metric of one worker. Thread-safe: counters take their own locks, gauges are read-only snapshots."""

    def __init__(self, appservices: Iterable[AppserviceID]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.transactions_sent = Counter(
            PREFIX + "transactions_sent",
            "Transactions the appservice accepted (2xx with a JSON body)",
            ["appservice"],
            registry=r,
        )
        self.transactions_failed = Counter(
            PREFIX + "transactions_failed",
            "Transaction attempts that failed, by reason (4xx, 5xx, timeout, connect, bad_response, internal)",
            ["appservice", "reason"],
            registry=r,
        )
        self.items_sent = Counter(
            PREFIX + "items_sent",
            "Items in transactions the appservice accepted, by kind (event, ephemeral, to_device, device)",
            ["appservice", "kind"],
            registry=r,
        )
        self.retries = Counter(
            PREFIX + "transaction_retries",
            "Attempts that resent a transaction already tried",
            ["appservice"],
            registry=r,
        )
        self.duration = Histogram(
            PREFIX + "transaction_duration_seconds",
            "Time from the start of a transaction's PUT to its outcome",
            ["appservice"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.dead_letters = Counter(
            PREFIX + "dead_letters", "Records diverted to the dead-letter topic, by reason", ["reason"], registry=r
        )
        self.rebalances = Counter(
            PREFIX + "rebalances",
            "Partition assignments received (Faust group; every rebalance ends with one)",
            registry=r,
        )
        for reason in Reason:
            self.dead_letters.labels(reason.value)
        self.owned = OwnedAppservices()
        # The router thread writes its group's and topic's keys, the loop the others': every write replaces
        # one key's whole value (atomic), the scrape reads copies.
        self.assigned: dict[str, int] = {}  # topic → partitions this worker consumes
        self.lag: dict[str, dict[Partition, int]] = {}  # group → (topic, partition) → records behind
        self.committed: dict[str, dict[Partition, int]] = {}  # group → (topic, partition) → where it resumes
        self.oldest = OldestUnconsumed()  # the lag in seconds, read by agents.lag_probe
        self.lag_reported: Callable[[], None] | None = None  # called after each lag report; must not block
        self._last_success: dict[AppserviceID, float] = {}
        # The HTTP status of each appservice's latest failed attempt (0: no answer, e.g. a timeout); gone on success.
        self._last_failure_status: dict[AppserviceID, int] = {}
        self._counters = {a: _AppserviceCounters(self, a) for a in appservices}
        r.register(_StateCollector(self))
        # process_* (CPU, memory, start time: a crash loop shows as start times changing), python_*.
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(standard)

    def transaction_done(self, send: Send, outcome: Outcome | None, duration_s: float) -> None:
        """One attempt at ``send`` ended in ``outcome`` (None: the worker broke while sending)."""
        counters = self._counters.get(send.appservice_id)
        if counters is None:
            return
        counters.duration.observe(duration_s)
        if send.attempt > 0:
            counters.retries.inc()
        reason = failure_reason(outcome)
        if reason is not None:
            counters.failed[reason].inc()
            self._last_failure_status[send.appservice_id] = outcome.status if isinstance(outcome, HttpError) else 0
            return
        self._last_failure_status.pop(send.appservice_id, None)
        counters.sent.inc()
        self._last_success[send.appservice_id] = time.time()
        sent = self.owned.inflight(send.appservice_id, send.txn_id)
        if sent is not None:
            for kind, count in zip(KINDS, sent, strict=True):
                if count:
                    counters.items[kind].inc(count)

    def dead_lettered(self, reason: Reason) -> None:
        self.dead_letters.labels(reason.value).inc()

    def set_lag(self, group: str, lags: dict[Partition, int], committed: dict[Partition, int] | None = None) -> None:
        """The lag of every partition ``group`` consumes here now (replacing the previous report).

        ``committed``: where the group resumes on each (``streams.observed.FROM_START`` if never committed),
        for the lag in seconds; partitions left out have no age until they are reported with one.
        """
        self.committed[group] = {key: offset for key, offset in (committed or {}).items() if key in lags}
        self.lag[group] = lags
        if self.lag_reported is not None:
            try:
                self.lag_reported()
            except Exception:
                log.exception("a lag report's follower failed")

    def behind(self, group: str) -> dict[Partition, tuple[int, int]]:
        """(records behind, committed offset) of each partition of ``group`` whose committed offset is known."""
        lags, committed = self.lag.get(group, {}), self.committed.get(group, {})
        return {key: (records, committed[key]) for key, records in lags.items() if key in committed}

    def set_assignment(self, group: str, topic: str, partitions: Iterable[int]) -> None:
        """``group`` consumes ``partitions`` of ``topic`` here now: the lag of any other goes."""
        owned = set(partitions)
        self.assigned[topic] = len(owned)
        kept = {key: lag for key, lag in self.lag.get(group, {}).items() if key[0] != topic or key[1] in owned}
        # Not set_lag: an assignment is no lag report, and must not wake a probe reading.
        self.committed[group] = {key: offset for key, offset in self.committed.get(group, {}).items() if key in kept}
        self.lag[group] = kept
        self.oldest.forget(group, topic, owned)

    def router_stats(self, group: str, topic: str, raw: str | bytes, partitions: Iterable[int]) -> None:
        """A librdkafka statistics document of the router's consumer (on the router thread; never raises)."""
        try:
            stats = orjson.loads(raw)
            partitions = list(partitions)
            lags = router_lag(stats, topic, partitions)
            committed = router_committed(stats, topic, partitions)
        except Exception:
            log.exception("unreadable librdkafka statistics")
            return
        self.set_lag(
            group,
            {(topic, partition): lag for partition, lag in lags.items()},
            {(topic, partition): offset for partition, offset in committed.items()},
        )


class _StateCollector(Collector):
    """Gauges built at scrape time from the worker's current state."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        now_ms = time.time_ns() // 1_000_000
        up = GaugeMetricFamily(
            PREFIX + "appservice_up", "1 unless the appservice is DOWN (backing off or retrying)", labels=["appservice"]
        )
        state = GaugeMetricFamily(
            PREFIX + "appservice_state", "1 for the appservice's current phase", labels=["appservice", "state"]
        )
        backlog = GaugeMetricFamily(
            PREFIX + "appservice_backlog_items",
            "Items accepted and not yet delivered (parked and in flight), by kind",
            labels=["appservice", "kind"],
        )
        down = GaugeMetricFamily(
            PREFIX + "appservice_down_since_seconds",
            "Seconds since the appservice went DOWN; 0 while up",
            labels=["appservice"],
        )
        oldest = GaugeMetricFamily(
            PREFIX + "appservice_oldest_undelivered_seconds",
            "Age of the oldest item not yet delivered, since its input record's timestamp (kept in the stored"
            " state, so it survives a change of owner); 0 when none",
            labels=["appservice"],
        )
        attempt = GaugeMetricFamily(
            PREFIX + "appservice_failed_attempts", "Failed attempts of the transaction in flight", labels=["appservice"]
        )
        success = GaugeMetricFamily(
            PREFIX + "appservice_last_success_timestamp_seconds",
            "When this worker last saw the appservice accept a transaction (Unix time)",
            labels=["appservice"],
        )
        failure_status = GaugeMetricFamily(
            PREFIX + "appservice_failure_status",
            "While DOWN: the HTTP status of the latest failed attempt (0: no HTTP answer, e.g. a timeout or a"
            " reset); 0 while up",
            labels=["appservice"],
        )
        last_success = m._last_success.copy()
        last_failure_status = m._last_failure_status.copy()
        for appservice_id, machine, oldest_ms in m.owned.snapshot():
            v = view(machine, now_ms, oldest_ms)
            up.add_metric([appservice_id], 1.0 if v.up else 0.0)
            for phase in PHASES:
                state.add_metric([appservice_id, phase.value], 1.0 if phase is v.phase else 0.0)
            for kind in KINDS:
                backlog.add_metric([appservice_id, KIND_LABELS[kind]], float(v.backlog[kind]))
            down.add_metric([appservice_id], v.down_for_s)
            oldest.add_metric([appservice_id], v.oldest_s)
            attempt.add_metric([appservice_id], float(v.attempt))
            failure_status.add_metric(
                [appservice_id], 0.0 if v.up else float(last_failure_status.get(appservice_id, 0))
            )
            if appservice_id in last_success:
                success.add_metric([appservice_id], last_success[appservice_id])
        yield from (up, state, backlog, down, oldest, attempt, failure_status, success)

        assigned = GaugeMetricFamily(
            PREFIX + "assigned_partitions", "Partitions this worker consumes, by topic", labels=["topic"]
        )
        for topic, count in sorted(m.assigned.copy().items()):
            assigned.add_metric([topic], float(count))
        yield assigned

        lag = GaugeMetricFamily(
            PREFIX + "consumer_lag",
            "Records behind the end of each partition this worker consumes (end offset minus committed offset)",
            labels=["group", "topic", "partition"],
        )
        lag_s = GaugeMetricFamily(
            PREFIX + "consumer_lag_seconds",
            "Age of the oldest record not yet committed in each partition this worker consumes (now minus its"
            " Kafka timestamp, read every lag interval); 0 when the lag is 0",
            labels=["group", "topic", "partition"],
        )
        for group, lags in sorted(m.lag.copy().items()):
            for (topic, partition), records in sorted(lags.items()):
                labels = [group, topic, str(partition)]
                lag.add_metric(labels, float(records))
                age = m.oldest.age_s(group, topic, partition, records, now_ms)
                if age is not None:
                    lag_s.add_metric(labels, age)
        yield lag
        yield lag_s


__all__ = ["PREFIX", "Metrics"]
