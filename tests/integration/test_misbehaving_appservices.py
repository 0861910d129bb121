"""Appservices that misbehave, one case each, beside a well-behaved one on the same worker.

Each case: a real worker and broker, two real loopback appservices. ``bad``
misbehaves for its first few attempts, then recovers; ``good`` must get its
events meanwhile. Each asserts the state ``bad`` is shown in (``/metrics``),
the delay between its attempts, that nothing is lost or reordered once it
recovers, and that ``good`` was not held up. Short timeouts and a 100 ms retry
unit keep each case within seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import orjson
import pytest

from agents.local_kafka import LocalKafka
from agents.producer import EventProducer
from tests.integration.events import message, numbers
from tests.integration.test_poison_records import dead_letters, headers
from tests.support.recording_appservice import Received, RecordingAppservice
from tests.support.scrape import Samples, until, value
from tests.support.worker_process import WorkerProcess, write_registration

Factory = Callable[[], RecordingAppservice]
RESPONSE_TIMEOUT_S = 1.0
UNIT_MS = 100  # WorkerProcess's retry unit: retries after 200, 400, 800 … ms
LIVE = 20  # events each appservice gets while ``bad`` is down


@dataclass
class Pair:
    bad: RecordingAppservice
    good: RecordingAppservice


@pytest.fixture
async def pair(appservice_factory: Factory, registrations: Path, worker: WorkerProcess) -> Pair:
    bad, good = appservice_factory(), appservice_factory()
    for name, appservice in (("bad", bad), ("good", good)):
        await appservice.start()
        write_registration(registrations, name, appservice.url)
    worker.extra_env["APPSERVICE_STREAMS_RESPONSE_TIMEOUT_S"] = str(RESPONSE_TIMEOUT_S)
    worker.extra_env["APPSERVICE_STREAMS_CONNECT_TIMEOUT_S"] = "2"
    worker.start()
    await until(
        worker,
        lambda s: all(value(s, "appservice_up", appservice=a) == 1 for a in ("bad", "good")),
        20,
        "both appservices up",
    )
    return Pair(bad, good)


def gaps_ms(attempts: list[Received]) -> list[float]:
    return [(b.at - a.at) * 1000 for a, b in itertools.pairwise(attempts)]


def down_as(reason: str, status: int) -> Callable[[Samples], bool]:
    def check(s: Samples) -> bool:
        return (
            value(s, "appservice_up", appservice="bad") == 0
            and value(s, "appservice_failure_status", appservice="bad") == status
            and (value(s, "transactions_failed_total", appservice="bad", reason=reason) or 0) >= 1
        )

    return check


async def misbehave_then_recover(
    pair: Pair, worker: WorkerProcess, producer: EventProducer, *, failures: int, reason: str, status: int
) -> list[float]:
    """Event 0 meets ``bad``'s misbehaviour (armed by the caller); events 1..LIVE follow for both appservices.

    Returns the gaps between the attempts at ``bad``'s first transaction.
    """
    producer.send_event(message(0, sender="@bad_x:example.org"))
    producer.flush()
    samples = await until(worker, down_as(reason, status), 10, f"bad DOWN with {reason} {status}")
    assert value(samples, "appservice_up", appservice="good") == 1
    for n in range(1, LIVE + 1):
        producer.send_event(message(n, sender="@bad_x:example.org"))
        producer.send_event(message(1000 + n, sender="@good_y:example.org"))
    producer.flush()

    # ``good`` gets everything while ``bad`` is still down (its outage lasts seconds): only ``bad``'s first
    # transaction has been attempted by then.
    assert numbers(await pair.good.wait_for_events(LIVE, timeout_s=10)) == [1000 + n for n in range(1, LIVE + 1)]
    assert {r.txn_id for r in pair.bad.requests} == {pair.bad.requests[0].txn_id}
    samples = await until(worker, down_as(reason, status), 1, f"bad still DOWN with {reason} {status}")
    assert value(samples, "appservice_up", appservice="good") == 1
    assert (value(samples, "transactions_failed_total", appservice="good", reason=reason) or 0) == 0
    assert (value(samples, "appservice_backlog_items", appservice="bad", kind="event") or 0) == LIVE + 1

    # Then ``bad`` recovers: every event once, in order, ids increasing, a repeated id always the same body.
    events = await pair.bad.wait_for_events(LIVE + 1, timeout_s=20)
    assert numbers(events) == list(range(LIVE + 1))
    delivered = pair.bad.delivered()
    ids = [int(r.txn_id) for r in delivered]
    assert ids == sorted(set(ids))
    samples = await until(worker, lambda s: value(s, "appservice_up", appservice="bad") == 1, 10, "bad up again")
    assert value(samples, "appservice_failure_status", appservice="bad") == 0
    first = [r for r in pair.bad.requests if r.txn_id == delivered[0].txn_id]
    assert len(first) == failures + 1
    return gaps_ms(first)


def assert_backoff(gaps: list[float], expected_ms: list[float]) -> None:
    for gap, expected in zip(gaps, expected_ms, strict=True):
        # Never shorter than asked (2^n units, or what the appservice asked for); the slack above is
        # for this shared 2-core machine, and still tells 2^n from 3^n units apart.
        assert expected <= gap < expected * 1.1 + 1200, (gaps, expected_ms)


@pytest.mark.parametrize("status", [404, 405])
async def test_a_client_error_keeps_retrying_with_the_backoff_shown_down_with_its_status(
    pair: Pair, worker: WorkerProcess, producer: EventProducer, status: int
) -> None:
    pair.bad.fail_next(4, status)  # down ~3 s: 200 + 400 + 800 + 1,600 ms
    gaps = await misbehave_then_recover(pair, worker, producer, failures=4, reason="4xx", status=status)
    assert_backoff(gaps, [2 * UNIT_MS, 4 * UNIT_MS, 8 * UNIT_MS, 16 * UNIT_MS])
    assert f"appservice bad is DOWN: txn {pair.bad.requests[0].txn_id} failed (HTTP {status}" in worker.log_text()


async def test_429_waits_at_least_retry_after_seconds_not_the_shorter_backoff(
    pair: Pair, worker: WorkerProcess, producer: EventProducer
) -> None:
    pair.bad.fail_next(1, 429, {"Retry-After": "2"})
    gaps = await misbehave_then_recover(pair, worker, producer, failures=1, reason="4xx", status=429)
    assert_backoff(gaps, [2000.0])  # the plain backoff would have been 200 ms


async def test_429_with_an_http_date_is_not_retried_before_that_date(
    pair: Pair, worker: WorkerProcess, producer: EventProducer
) -> None:
    when = (datetime.now(UTC) + timedelta(seconds=4)).replace(microsecond=0)
    pair.bad.fail_next(1, 429, {"Retry-After": format_datetime(when, usegmt=True)})
    await misbehave_then_recover(pair, worker, producer, failures=1, reason="4xx", status=429)
    retry = [r for r in pair.bad.requests if r.txn_id == pair.bad.requests[0].txn_id][1]
    retried_at = retry.at + (time.time() - time.monotonic())  # the same machine's clocks
    assert retried_at >= when.timestamp() - 0.05, (retried_at, when.timestamp())
    assert retried_at < when.timestamp() + 2.0


async def test_no_response_within_the_response_timeout_is_a_timed_out_attempt(
    pair: Pair, worker: WorkerProcess, producer: EventProducer
) -> None:
    pair.bad.hang_next(2)
    gaps = await misbehave_then_recover(pair, worker, producer, failures=2, reason="timeout", status=0)
    timeout_ms = RESPONSE_TIMEOUT_S * 1000
    assert_backoff(gaps, [timeout_ms + 2 * UNIT_MS, timeout_ms + 4 * UNIT_MS])


async def test_a_connection_reset_mid_response_is_a_failed_attempt(
    pair: Pair, worker: WorkerProcess, producer: EventProducer
) -> None:
    pair.bad.reset_next(4)
    gaps = await misbehave_then_recover(pair, worker, producer, failures=4, reason="connect", status=0)
    assert_backoff(gaps, [2 * UNIT_MS, 4 * UNIT_MS, 8 * UNIT_MS, 16 * UNIT_MS])


async def test_413_splits_the_txn_in_halves_and_dead_letters_one_event_still_refused(
    kafka: LocalKafka, pair: Pair, worker: WorkerProcess, producer: EventProducer
) -> None:
    limit, poison = 10, 33  # ``bad`` refuses (413) any txn of more than 10 events, and any holding event 33

    def too_large(received: Received) -> bool:
        return len(received.events) > limit or poison in numbers(received.events)

    pair.bad.fail_matching(too_large, 1_000, status=413)
    pair.bad.hold()
    producer.send_event(message(0, sender="@bad_x:example.org"))
    producer.flush()
    await pair.bad.wait_for_requests(1, timeout_s=10)
    for n in range(1, 61):  # formed into one txn of 60 events behind the held one
        producer.send_event(message(n, sender="@bad_x:example.org"))
        producer.send_event(message(1000 + n, sender="@good_y:example.org"))
    producer.flush()
    assert numbers(await pair.good.wait_for_events(60, timeout_s=10)) == [1000 + n for n in range(1, 61)]
    pair.bad.release()

    await pair.bad.wait_for_events(61, timeout_s=20)  # counting refused ones: all of them reached it
    samples = await until(
        worker,
        lambda s: value(s, "appservice_backlog_items", appservice="bad", kind="event") == 0,
        20,
        "bad's backlog empty",
    )
    delivered = pair.bad.delivered()  # asserts a repeated id always carries the same body
    accepted = [r for r in delivered if not too_large(r)]
    assert numbers([e for r in accepted for e in r.events]) == [n for n in range(61) if n != poison]
    ids = [int(r.txn_id) for r in pair.bad.requests]
    assert ids == sorted(ids), "txn ids strictly increase, refused or not"
    refused = [r for r in pair.bad.requests if too_large(r)]
    assert [len(r.events) for r in refused][:3] == [60, 30, 15], "each refusal halves the txn"
    assert len({r.txn_id for r in refused}) == len(refused), "a refused txn is never sent again"
    alone = max(i for i, r in enumerate(pair.bad.requests) if numbers(r.events) == [poison])
    after_the_letter = [len(r.events) for r in pair.bad.requests[alone + 1 :]]
    assert len(after_the_letter) < 10, f"the 27 events after it go in halves again, not one per txn: {after_the_letter}"

    [letter] = dead_letters(kafka.bootstrap, f"{worker.app_id}.dead-letter", 1)
    assert headers(letter)["reason"] == b"refused_by_appservice"
    assert b"HTTP 413" in headers(letter)["detail"]
    assert numbers(orjson.loads(letter.value())["events"]) == [poison]
    assert value(samples, "appservice_up", appservice="bad") == 1
    assert value(samples, "dead_letters_total", reason="refused_by_appservice") == 1
    assert (value(samples, "transactions_failed_total", appservice="bad", reason="4xx") or 0) == len(refused)
    assert worker.process is not None and worker.process.poll() is None


async def test_a_worker_killed_while_it_dead_letters_a_refused_event_loses_nothing_after_its_restart(
    kafka: LocalKafka, pair: Pair, worker: WorkerProcess, producer: EventProducer
) -> None:
    limit, poison = 10, 33

    def too_large(received: Received) -> bool:
        return len(received.events) > limit or poison in numbers(received.events)

    pair.bad.fail_matching(too_large, 1_000, status=413)
    pair.bad.hold()
    producer.send_event(message(0, sender="@bad_x:example.org"))
    producer.flush()
    await pair.bad.wait_for_requests(1, timeout_s=10)
    for n in range(1, 61):
        producer.send_event(message(n, sender="@bad_x:example.org"))
    producer.flush()
    await asyncio.sleep(1.0)  # let the worker park them behind the held txn: one txn of 60 next
    pair.bad.release()
    deadline = time.monotonic() + 20
    while not any(numbers(r.events) == [poison] for r in pair.bad.requests):  # refused alone: dead-letter next
        assert time.monotonic() < deadline, "the poison event never went alone"
        await asyncio.sleep(0.01)
    worker.kill()
    worker.start()
    for n in range(61, 71):  # after the restart, for both
        producer.send_event(message(n, sender="@bad_x:example.org"))
        producer.send_event(message(1000 + n, sender="@good_y:example.org"))
    producer.flush()

    assert numbers(await pair.good.wait_for_events(10, timeout_s=20)) == [1000 + n for n in range(61, 71)]
    await until(
        worker,
        lambda s: (
            value(s, "appservice_backlog_items", appservice="bad", kind="event") == 0
            and value(s, "appservice_up", appservice="bad") == 1
        ),
        30,
        "bad's backlog empty",
    )
    accepted = [r for r in pair.bad.delivered() if not too_large(r)]  # one body per id, across the restart
    assert numbers([e for r in accepted for e in r.events]) == [n for n in range(71) if n != poison]
    ids = [int(r.txn_id) for r in pair.bad.requests]
    assert ids == sorted(ids), "txn ids strictly increase across the restart"
    letters = dead_letters(kafka.bootstrap, f"{worker.app_id}.dead-letter", 1)
    assert letters and all(numbers(orjson.loads(x.value())["events"]) == [poison] for x in letters)
