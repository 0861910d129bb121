"""The ingest's HTTP side against a fake Kafka sink: answers, one write at a time, 500 on a Kafka failure."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents.ingest import Ingest, IngestConfig
from streams.errors import KafkaRequestFailed
from streams.ingest import Position, Produce, Record, Retry, decide, firehose_registration
from streams.registration import parse_registration

EVENT = {"event_id": "$e", "type": "m.room.message", "sender": "@a:hs", "room_id": "!r:hs", "content": {}}


class FakeSink:
    """``KafkaSink``'s contract in memory; each write takes ``delay_s`` on its thread."""

    def __init__(self) -> None:
        self.last: Position | None = None
        self.written: list[tuple[str, list[Record]]] = []
        self.fail_next = False
        self.delay_s = 0.0
        self._busy = threading.Lock()
        self.overlapped = False

    def write(self, incoming: Position, records: list[Record]) -> Retry | Produce:
        if not self._busy.acquire(blocking=False):
            self.overlapped = True
            self._busy.acquire()
        try:
            time.sleep(self.delay_s)
            if self.fail_next:
                self.fail_next = False
                raise KafkaRequestFailed("transaction to matrix.events: broker gone")
            decision = decide(self.last, incoming)
            if isinstance(decision, Produce):
                self.written.append((incoming.txn_id, records))
                self.last = incoming
            return decision
        finally:
            self._busy.release()


@pytest.fixture
async def served() -> AsyncIterator[tuple[TestClient[Any, Any], FakeSink]]:
    doc = firehose_registration("firehose", "http://127.0.0.1:1", "as-token", "hs-token")
    config = IngestConfig(parse_registration(doc, Path("firehose.yaml")), "unused:9092", max_body_bytes=4096)
    sink = FakeSink()
    client = TestClient(TestServer(Ingest(config, sink).app()))
    await client.start_server()
    yield client, sink
    await client.close()


async def put(client: TestClient[Any, Any], txn_id: str, body: bytes, token: str = "hs-token") -> tuple[int, Any]:
    response = await client.put(
        f"/_matrix/app/v1/transactions/{txn_id}", data=body, headers={"Authorization": f"Bearer {token}"}
    )
    return response.status, await response.json()


async def test_a_kafka_failure_is_a_500_and_the_retry_is_produced(
    served: tuple[TestClient[Any, Any], FakeSink],
) -> None:
    client, sink = served
    body = orjson.dumps({"events": [EVENT]})
    sink.fail_next = True
    status, answer = await put(client, "1", body)
    assert (status, answer["errcode"]) == (500, "M_UNKNOWN")
    assert await put(client, "1", body) == (200, {})
    assert await put(client, "1", body) == (200, {})  # the retry of a success: not written again
    assert [txn for txn, _ in sink.written] == ["1"]


async def test_concurrent_transactions_are_written_one_at_a_time_in_arrival_order(
    served: tuple[TestClient[Any, Any], FakeSink],
) -> None:
    client, sink = served
    sink.delay_s = 0.05
    results = await asyncio.gather(*(put(client, str(n), orjson.dumps({"events": [EVENT], "n": n})) for n in range(5)))
    assert all(result == (200, {}) for result in results)
    assert not sink.overlapped
    assert sorted(txn for txn, _ in sink.written) == ["0", "1", "2", "3", "4"]


async def test_errors_come_before_any_write(served: tuple[TestClient[Any, Any], FakeSink]) -> None:
    client, sink = served
    assert (await put(client, "1", b"{}", token="nope"))[0] == 403
    assert (await put(client, "1", b"not json"))[1]["errcode"] == "M_NOT_JSON"
    assert (await put(client, "1", b'{"events": [{}]}'))[1]["errcode"] == "M_BAD_JSON"
    assert (await put(client, "1", b'{"events": [], "x": "' + b"y" * 5000 + b'"}'))[1]["errcode"] == "M_TOO_LARGE"
    response = await client.put("/_matrix/app/v1/transactions/1", data=b"{}")
    assert (response.status, (await response.json())["errcode"]) == (401, "M_UNAUTHORIZED")
    assert sink.written == []
