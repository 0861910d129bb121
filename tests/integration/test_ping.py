"""The appservice ping endpoint served by workers, and the retry a successful ping forces."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka.partitioner import murmur2

from agents.producer import EventProducer
from tests.integration.events import message
from tests.support.recording_appservice import RecordingAppservice
from tests.support.worker_process import WorkerProcess, free_port, write_registration

Factory = Callable[[], RecordingAppservice]


async def ping(worker: WorkerProcess, appservice_id: str, token: str | None) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{worker.http_port}/_matrix/client/v1/appservice/{appservice_id}/ping"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json={"transaction_id": "ping-1"}, headers=headers) as response,
    ):
        return response.status, await response.json()


async def started(factory: Factory, registrations: Path) -> RecordingAppservice:
    appservice = factory()
    await appservice.start()
    write_registration(registrations, "bridge", appservice.url)
    return appservice


async def test_a_successful_ping_reports_its_duration_and_reaches_the_appservice(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess
) -> None:
    appservice = await started(appservice_factory, registrations)
    worker.start()
    status, body = await ping(worker, "bridge", "as-bridge")
    assert status == 200 and isinstance(body["duration_ms"], int)
    assert appservice.pings == [{"authorization": "Bearer hs-secret", "body": {"transaction_id": "ping-1"}}]


async def test_refused_pings_name_the_problem(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess
) -> None:
    await started(appservice_factory, registrations)
    write_registration(registrations, "silent", None)
    worker.start()
    assert (await ping(worker, "bridge", "as-silent"))[0:1] == (403,)
    assert (await ping(worker, "bridge", "as-silent"))[1]["errcode"] == "M_FORBIDDEN"
    assert (await ping(worker, "silent", "as-silent"))[1]["errcode"] == "M_URL_NOT_SET"
    assert (await ping(worker, "bridge", None))[1]["errcode"] == "M_MISSING_TOKEN"


async def test_an_error_status_from_the_appservice_is_m_bad_status(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess
) -> None:
    appservice = await started(appservice_factory, registrations)
    appservice.ping_status = 503
    worker.start()
    status, body = await ping(worker, "bridge", "as-bridge")
    assert (status, body["errcode"], body["status"]) == (502, "M_BAD_STATUS", 503)
    assert "ping refused" in body["body"]


async def test_an_unreachable_appservice_is_m_connection_failed(registrations: Path, worker: WorkerProcess) -> None:
    write_registration(registrations, "bridge", f"http://127.0.0.1:{free_port()}")
    worker.start()
    status, body = await ping(worker, "bridge", "as-bridge")
    assert (status, body["errcode"]) == (502, "M_CONNECTION_FAILED")


async def test_a_hanging_appservice_is_m_connection_timeout(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess
) -> None:
    appservice = await started(appservice_factory, registrations)
    appservice.ping_hangs = True
    worker.extra_env["APPSERVICE_STREAMS_RESPONSE_TIMEOUT_S"] = "1"
    worker.start()
    status, body = await ping(worker, "bridge", "as-bridge")
    assert (status, body["errcode"]) == (504, "M_CONNECTION_TIMEOUT")


async def test_a_ping_to_another_worker_retries_the_pending_txn_at_once(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess, producer: EventProducer, tmp_path: Path
) -> None:
    appservice = await started(appservice_factory, registrations)
    appservice.fail_next(2)
    worker.retry_unit_ms = 1000  # after two failures the next retry is 4 s away
    other = worker.sibling("other", tmp_path)
    worker.start()
    other.start()
    try:
        owner_partition = (murmur2(b"bridge") & 0x7FFFFFFF) % 4
        deadline = time.monotonic() + 30
        while True:
            mine, theirs = worker.owned_partitions() or [], other.owned_partitions() or []
            if sorted(mine + theirs) == [0, 1, 2, 3]:
                break
            assert time.monotonic() < deadline, f"partitions not split between workers: {mine} {theirs}"
            await asyncio.sleep(0.2)
        not_owner = other if owner_partition in mine else worker
        producer.send_event(message(1))
        producer.flush()
        attempts = await appservice.wait_for_requests(2, timeout_s=20)
        pinged_at = time.monotonic()
        status, _ = await ping(not_owner, "bridge", "as-bridge")
        assert status == 200
        attempts = await appservice.wait_for_requests(3, timeout_s=10)
        assert attempts[2].at - pinged_at < 1.5, "the retry waited for its backoff instead of the ping"
        assert attempts[2].txn_id == attempts[0].txn_id and attempts[2].body == attempts[0].body
    finally:
        other.stop()
