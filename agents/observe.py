"""Metrics and health wired into the Faust app: rebalance signals, the lag timer, the listener.

* An assignment (Faust's ``on_partitions_assigned``, the full new set: its
  consumer rebalances eagerly) counts a rebalance, sets the partitions owned
  per topic and which appservices may export gauges; a revocation drops every
  appservice's gauges and the Faust group's lag until the next assignment.
* Every ``lag_interval_s`` (setting, 5 s) the Faust group's lag on inbox and
  delay is taken as highwater (from the consumer's last fetch) minus the
  offset it committed. The router's lag comes from librdkafka's statistics
  (``agents.router``, same interval). Then ``agents.lag_probe``, on its own
  thread, reads the timestamps that make both groups' lag in seconds.
* The metrics listener starts before the worker (so a wedged start-up is
  visible) and stops with it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.types import TP

from agents.lag_probe import LagProbe
from agents.metrics_http import MetricsServer
from agents.pipeline import Pipeline
from agents.router import Router
from streams.observed import FROM_START, group_lag

log = logging.getLogger(__name__)


def install(pipeline: Pipeline, routing: Router) -> MetricsServer:
    app = pipeline.app
    settings = pipeline.settings
    metrics = pipeline.metrics
    health = pipeline.health
    faust_topics = (settings.inbox_topic, settings.delay_topic)
    group = settings.app_id

    health.router_started = routing.started.is_set
    health.router_alive = lambda: routing.alive
    health.rebalancing = lambda: bool(app.rebalancing)

    @app.on_partitions_assigned.connect  # type: ignore[untyped-decorator]
    async def count_assignment(sender: Any, assigned: Any, **kwargs: Any) -> None:
        metrics.rebalances.inc()
        for topic in faust_topics:
            metrics.set_assignment(group, topic, (tp.partition for tp in assigned if tp.topic == topic))
        metrics.owned.assigned(tp.partition for tp in assigned if tp.topic == settings.inbox_topic)
        health.assigned = True

    @app.on_partitions_revoked.connect  # type: ignore[untyped-decorator]
    async def drop_owned(sender: Any, revoked: Any, **kwargs: Any) -> None:
        health.assigned = False
        metrics.owned.revoked()
        for topic in faust_topics:
            metrics.set_assignment(group, topic, ())

    probe = LagProbe(settings, metrics, (settings.router_group, group))
    # Every lag report (this timer's, and the router's from its statistics) wakes a reading at once: its
    # committed offsets are then fresh, and an age overstates by one interval's progress at most.
    metrics.lag_reported = probe.wake

    @app.timer(interval=settings.lag_interval_s)  # type: ignore[untyped-decorator]
    async def measure_lag() -> None:
        if app.rebalancing:
            # Until recovery seeks the new assignment to its committed offsets, Faust knows none of them
            # (None, which reads as never committed): a lag taken now was the whole partition (1,635
            # records, and the first record's age, 175 s, seen after a takeover). Keep the last report.
            return
        consumer = app.consumer
        lags: dict[tuple[str, int], int] = {}
        resumes: dict[tuple[str, int], int] = {}
        try:
            committed = consumer._committed_offset  # Faust's record of what it committed per partition
            for tp in consumer.assignment():
                if tp.topic in faust_topics:
                    offset = committed.get(TP(tp.topic, tp.partition))
                    lag = group_lag(consumer.highwater(tp), offset)
                    if lag is not None:
                        lags[(tp.topic, tp.partition)] = lag
                        resumes[(tp.topic, tp.partition)] = offset if offset is not None and offset >= 0 else FROM_START
        except Exception:
            log.exception("could not measure the consumer group's lag")
            return
        metrics.set_lag(group, lags, resumes)

    server = MetricsServer(settings.metrics_host, settings.metrics_port, metrics, health)

    @app.on_before_shutdown.connect  # type: ignore[untyped-decorator]
    async def stop_metrics(sender: Any, **kwargs: Any) -> None:
        await asyncio.to_thread(probe.stop)
        await asyncio.to_thread(server.stop)

    return server


__all__ = ["install"]
