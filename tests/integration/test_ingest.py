"""The ingest process against the real broker: the appservice protocol in, Kafka transactions out."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

from agents.local_kafka import LocalKafka
from agents.topics import delete_prefixed, key_partition
from streams import envelope
from streams.ingest import firehose_registration
from tests.integration.events import message
from tests.support.ingest_process import IngestProcess, committed_records
from tests.support.recording_appservice import RecordingAppservice
from tests.support.worker_process import WorkerProcess, free_port, write_registration

HS_TOKEN = "hs-firehose-secret"


@pytest.fixture
def ingest(kafka: LocalKafka, tmp_path: Path, run_id: str) -> Iterator[IngestProcess]:
    registration = tmp_path / "firehose.yaml"
    process = IngestProcess(registration, f"ingest.events.{run_id}", tmp_path / "ingest.log")
    doc = firehose_registration("firehose", process.url, "as-firehose", HS_TOKEN)
    registration.write_text(yaml.safe_dump(doc))
    process.start()
    yield process
    process.stop()
    delete_prefixed(kafka.bootstrap, (process.topic,))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def put(
    http: aiohttp.ClientSession, ingest: IngestProcess, txn_id: str, body: Any, token: str | None = HS_TOKEN, **kw: Any
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    path = kw.pop("path", f"/_matrix/app/v1/transactions/{txn_id}")
    async with http.put(ingest.url + path, data=data, headers=headers, **kw) as response:
        return response.status, await response.json(content_type=None)


def records(kafka: LocalKafka, ingest: IngestProcess) -> list[tuple[int, bytes, bytes]]:
    return committed_records(kafka.bootstrap, ingest.topic)


async def test_a_transaction_becomes_records_keyed_and_partitioned_as_the_router_expects(
    kafka: LocalKafka, ingest: IngestProcess, http: aiohttp.ClientSession
) -> None:
    body = {
        "events": [message(1, room="!a:example.org"), message(2, room="!b:example.org")],
        "ephemeral": [{"type": "m.typing", "room_id": "!a:example.org", "content": {"user_ids": []}}],
        "de.sorunome.msc2409.ephemeral": [
            {"type": "m.typing", "room_id": "!a:example.org", "content": {"user_ids": []}}
        ],
        "org.matrix.msc3202.device_lists": {"changed": ["@u:example.org"], "left": []},
    }
    assert await put(http, ingest, "1", body) == (200, {})
    got = records(kafka, ingest)
    assert len(got) == 4
    for partition, key, value in got:
        assert partition == key_partition(key, 4)  # murmur2, as Faust and the router place keys
        assert key.decode() == envelope.record_key(envelope.decode(value))
    kinds = sorted(orjson.loads(v)["kind"] for _, _, v in got)
    assert kinds == ["device_lists", "ephemeral", "event", "event"]


async def test_a_retry_of_the_last_transaction_is_answered_without_producing_even_after_a_kill(
    kafka: LocalKafka, ingest: IngestProcess, http: aiohttp.ClientSession
) -> None:
    body = {"events": [message(1)]}
    assert await put(http, ingest, "5", body) == (200, {})
    assert await put(http, ingest, "5", body) == (200, {})
    ingest.kill()
    ingest.start()  # reads its last position back from Kafka
    assert await put(http, ingest, "5", body) == (200, {})
    assert len(records(kafka, ingest)) == 1
    assert await put(http, ingest, "6", {"events": [message(2)]}) == (200, {})
    assert len(records(kafka, ingest)) == 2


async def test_an_id_that_went_back_is_produced_with_a_warning_not_dropped(
    kafka: LocalKafka, ingest: IngestProcess, http: aiohttp.ClientSession
) -> None:
    assert await put(http, ingest, "900", {"events": [message(1)]}) == (200, {})
    assert await put(http, ingest, "1", {"events": [message(2)]}) == (200, {})  # Synapse's SQLite counter reset
    assert await put(http, ingest, "2", {"events": [message(3)]}) == (200, {})
    assert len(records(kafka, ingest)) == 3
    assert ingest.log_text().count("counter went back") == 1


async def test_authentication_missing_is_401_wrong_is_403_and_the_legacy_query_token_works(
    kafka: LocalKafka, ingest: IngestProcess, http: aiohttp.ClientSession
) -> None:
    body = {"events": [message(1)]}
    assert await put(http, ingest, "1", body, token=None) == (
        401,
        {"errcode": "M_UNAUTHORIZED", "error": "Missing access token"},
    )
    status, answer = await put(http, ingest, "1", body, token="hs-wrong")
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
    status, answer = await put(http, ingest, "1", body, token=None, params={"access_token": HS_TOKEN})
    assert (status, answer) == (200, {})
    assert await put(http, ingest, "2", {"events": [message(2)]}, path="/transactions/2") == (200, {})
    async with http.post(ingest.url + "/_matrix/app/v1/ping", json={"transaction_id": "t"}) as response:
        assert response.status == 401
    headers = {"Authorization": f"Bearer {HS_TOKEN}"}
    async with http.post(
        ingest.url + "/_matrix/app/v1/ping", json={"transaction_id": "t"}, headers=headers
    ) as response:
        assert (response.status, await response.json()) == (200, {})
    assert len(records(kafka, ingest)) == 2
    assert HS_TOKEN not in ingest.log_text()


async def test_bad_bodies_get_the_specs_errors_and_nothing_reaches_kafka(
    kafka: LocalKafka, ingest: IngestProcess, http: aiohttp.ClientSession
) -> None:
    status, answer = await put(http, ingest, "1", b"{not json")
    assert (status, answer["errcode"]) == (400, "M_NOT_JSON")
    status, answer = await put(http, ingest, "2", {"events": [message(1), {"type": "m.room.message"}]})
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")
    assert "events[1].event_id" in answer["error"]
    big = {"events": [message(1)], "padding": "x" * (17 << 20)}
    status, answer = await put(http, ingest, "3", big)
    assert (status, answer["errcode"]) == (413, "M_TOO_LARGE")
    assert records(kafka, ingest) == []


async def test_a_transaction_kafka_refuses_halfway_is_aborted_whole_answered_500_then_retried(
    kafka: LocalKafka, ingest: IngestProcess, http: aiohttp.ClientSession
) -> None:
    # The second event is over the broker's record size: the first is already in the Kafka transaction.
    huge = message(2)
    huge["content"]["body"] = "x" * (2 << 20)
    body = {"events": [message(1), huge]}
    status, answer = await put(http, ingest, "1", body)
    assert (status, answer["errcode"]) == (500, "M_UNKNOWN")
    assert records(kafka, ingest) == []
    # The homeserver retries; here with the body fixed, as another txn would be after the retries.
    assert await put(http, ingest, "1", {"events": [message(1)]}) == (200, {})
    assert await put(http, ingest, "2", {"events": [message(3)]}) == (200, {})
    assert [orjson.loads(v)["event"]["event_id"] for _, _, v in records(kafka, ingest)] == [
        "$event1:example.org",
        "$event3:example.org",
    ]


def test_a_listen_address_in_use_fails_at_start_up_before_kafka_is_touched(tmp_path: Path) -> None:
    registration = tmp_path / "firehose.yaml"
    registration.write_text(yaml.safe_dump(firehose_registration("firehose", "http://127.0.0.1:1", "as", HS_TOKEN)))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = ["ingest", "--registration", str(registration), "--listen", f"127.0.0.1:{port}"]
        result = subprocess.run(
            [sys.executable, "-m", "agents.cli", *command, "--bootstrap-servers", f"127.0.0.1:{free_port()}"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).parents[2],
        )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"appservice-streams ingest: cannot listen on 127.0.0.1:{port} (--listen): Address already in use"
    )


async def test_the_routers_group_shows_no_lag_after_transactional_records(
    kafka: LocalKafka,
    tmp_path: Path,
    registrations: Path,
    worker: WorkerProcess,
    appservice_factory: Callable[[], RecordingAppservice],
    http: aiohttp.ClientSession,
) -> None:
    """Each Kafka transaction ends with a commit marker no consumer returns: the router commits past it when idle."""
    bridge = appservice_factory()
    write_registration(registrations, "bridge", await bridge.start())
    firehose = tmp_path / "firehose.yaml"
    firehose.write_text(yaml.safe_dump(firehose_registration("firehose", "http://127.0.0.1:1", "as", HS_TOKEN)))
    ingest = IngestProcess(firehose, worker.input_topic, tmp_path / "ingest2.log")
    worker.start()
    ingest.start()
    try:
        for n in range(3):
            assert await put(http, ingest, str(n), {"events": [message(n)]}) == (200, {})
        await bridge.wait_for_requests(1)
        partition = key_partition(b"!room:example.org", 4)
        consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": f"{worker.app_id}-router"})
        try:
            _, end = consumer.get_watermark_offsets(TopicPartition(worker.input_topic, partition), timeout=10)
            assert end == 6  # 3 records, 3 commit markers
            committed = -1
            for _ in range(50):
                committed = consumer.committed([TopicPartition(worker.input_topic, partition)], timeout=10)[0].offset
                if committed == end:
                    break
                await asyncio.sleep(0.1)
            assert committed == end
        finally:
            consumer.close()
    finally:
        ingest.stop()
