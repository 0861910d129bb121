"""bench.scenarios.capacity: when a step holds the latency targets, and CPU per delivered txn."""

from __future__ import annotations

import pytest

from bench.scenarios.capacity import Step
from bench.scenarios.common import cpu_us_per, thread_group
from bench.stats import Summary


def step(p50: float, p99: float, delivered: int = 100, offered: int = 100) -> Step:
    return Step(
        rate=1000.0,
        summary=Summary(count=delivered, p50=p50, p99=p99, max=p99, mean=p50),
        offered=offered,
        delivered=delivered,
        txns=50,
        events_in_txns=delivered,
        worker_cpu_s=0.05,
        worker_cpu_s_by_thread={},
        worker_cores=0.5,
        broker_cores=None,
    )


@pytest.mark.parametrize(
    ("p50", "p99", "delivered", "held"),
    [
        (10.0, 50.0, 100, True),  # both bounds are inclusive
        (10.1, 20.0, 100, False),
        (5.0, 50.1, 100, False),
        (5.0, 20.0, 99, False),  # an event missing is a miss whatever the percentiles
    ],
)
def test_a_step_holds_only_within_both_targets_with_every_event(
    p50: float, p99: float, delivered: int, held: bool
) -> None:
    assert step(p50, p99, delivered).held is held


def test_a_step_without_samples_does_not_hold() -> None:
    assert not Step(1000.0, None, 100, 0, 0, 0, 0.1, {}, 0.1, None).held


def test_cpu_per_item_in_microseconds_and_none_for_nothing() -> None:
    assert cpu_us_per(0.05, 50) == pytest.approx(1000.0)
    assert cpu_us_per(0.05, 0) is None


@pytest.mark.parametrize(
    ("tid", "name", "group"),
    [
        (100, "python", "main thread"),  # the process's own id
        (101, "router", "router thread"),
        (102, "rdk:broker1", "librdkafka threads"),
        (103, "changelog-poll", "other Python threads"),
        (104, "python", "other Python threads"),  # a thread left unnamed, such as asyncio.to_thread's
    ],
)
def test_worker_threads_fall_into_their_group(tid: int, name: str, group: str) -> None:
    assert thread_group(100, tid, name) == group
