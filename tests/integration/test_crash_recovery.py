"""Killing a worker with SIGKILL mid-stream loses nothing and reorders nothing."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from agents.producer import EventProducer
from tests.integration.events import message, numbers
from tests.support.recording_appservice import RecordingAppservice
from tests.support.worker_process import WorkerProcess, write_registration

EVENTS_PER_APPSERVICE = 400


def assert_delivered_once_in_order(appservice: RecordingAppservice, expected: list[int]) -> None:
    delivered = appservice.delivered()  # also asserts: a repeated txn id always has the same body
    assert numbers([e for r in delivered for e in r.events]) == expected
    ids = [int(r.txn_id) for r in delivered]
    assert ids == sorted(ids), "txn ids went backwards"


@pytest.mark.parametrize("wipe_state", [False, True], ids=["warm-state", "state-rebuilt-from-changelog"])
async def test_sigkill_mid_stream_then_restart_delivers_everything_in_order(
    appservice_factory: Callable[[], RecordingAppservice],
    registrations: Path,
    worker: WorkerProcess,
    producer: EventProducer,
    wipe_state: bool,
) -> None:
    alpha, beta = appservice_factory(), appservice_factory()
    for appservice_id, appservice in (("alpha", alpha), ("beta", beta)):
        await appservice.start()
        appservice.delay_s = 0.01  # keep transactions in flight while we kill
        write_registration(registrations, appservice_id, appservice.url)
    worker.start()
    for n in range(EVENTS_PER_APPSERVICE):
        producer.send_event(message(n, sender="@alpha_a:example.org"))
        producer.send_event(message(10_000 + n, sender="@beta_b:example.org"))
    producer.flush()
    await alpha.wait_for_requests(3)
    worker.kill()
    killed_at = len(alpha.delivered_events()) + len(beta.delivered_events())
    if wipe_state:
        shutil.rmtree(worker.data_dir)
    await asyncio.sleep(0.5)
    worker.start()
    await alpha.wait_for_events(EVENTS_PER_APPSERVICE, timeout_s=60)
    await beta.wait_for_events(EVENTS_PER_APPSERVICE, timeout_s=60)
    assert killed_at < 2 * EVENTS_PER_APPSERVICE, "the kill came too late to test anything"
    assert_delivered_once_in_order(alpha, list(range(EVENTS_PER_APPSERVICE)))
    assert_delivered_once_in_order(beta, [10_000 + n for n in range(EVENTS_PER_APPSERVICE)])
