"""``APPSERVICE_STREAMS_LOG_FORMAT=json``: every line a real worker writes is one JSON object, tokens hidden."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import orjson
import yaml

from agents.local_kafka import LocalKafka
from agents.producer import EventProducer
from agents.topics import delete_prefixed
from streams.ingest import firehose_registration
from tests.integration.events import message
from tests.integration.test_metrics import Factory
from tests.support.ingest_process import IngestProcess
from tests.support.worker_process import WorkerProcess, write_registration


def json_lines(text: str, start: str = "===== start 1 =====") -> list[dict[str, object]]:
    """Every line after ``start``, each parsed as one JSON object (raises on any other line)."""
    lines = [line for line in text[text.rfind(start) :].splitlines()[1:] if line]
    docs = [orjson.loads(line) for line in lines]
    assert all(isinstance(doc, dict) and {"time", "level", "logger", "message"} <= set(doc) for doc in docs)
    return docs


async def test_a_worker_asked_for_json_writes_only_json_lines_faust_and_kafka_clients_included(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess, producer: EventProducer
) -> None:
    bridge = appservice_factory()
    await bridge.start()
    write_registration(registrations, "bridge", bridge.url)
    worker.extra_env = {"APPSERVICE_STREAMS_LOG_FORMAT": "json"}
    worker.start()
    bridge.fail_next(1, 503)  # a DOWN and an UP line, logged by the worker itself
    producer.send_event(message(0))
    producer.flush()
    await bridge.wait_for_events(1, timeout_s=30)
    deadline = time.monotonic() + 15
    while "is UP again" not in worker.log_text():  # logged once the success is stepped, after the PUT
        assert time.monotonic() < deadline, worker.log_text()[-3000:]
        await asyncio.sleep(0.1)
    worker.stop()

    text = worker.log_text()
    docs = json_lines(text)
    loggers = {str(doc["logger"]).split(".")[0] for doc in docs}
    assert {"agents", "faust", "appservice_streams"} <= loggers, loggers
    messages = [str(doc["message"]) for doc in docs]
    assert any("worker ready" in m for m in messages)
    assert any("is DOWN" in m for m in messages) and any("is UP again" in m for m in messages)
    assert "as-bridge" not in text and "hs-secret" not in text  # the registration's tokens


async def test_the_ingest_asked_for_json_writes_only_json_lines_and_never_its_tokens(
    kafka: LocalKafka, tmp_path: Path, run_id: str
) -> None:
    registration = tmp_path / "firehose.yaml"
    ingest = IngestProcess(registration, f"ingest.events.{run_id}", tmp_path / "ingest.log")
    ingest.extra_env = {"APPSERVICE_STREAMS_LOG_FORMAT": "json"}
    registration.write_text(yaml.safe_dump(firehose_registration("firehose", ingest.url, "as-fh-1234", "hs-fh-5678")))
    ingest.start()
    try:
        url = f"{ingest.url}/_matrix/app/v1/transactions/1"
        async with aiohttp.ClientSession() as http:
            async with http.put(
                url, json={"events": [message(1)]}, headers={"Authorization": "Bearer hs-fh-5678"}
            ) as r:
                assert r.status == 200
            async with http.put(url, json={"events": []}, headers={"Authorization": "Bearer hs-fh-5678x"}) as r:
                assert r.status == 403
    finally:
        ingest.stop()
        delete_prefixed(kafka.bootstrap, (ingest.topic,))
    text = ingest.log_text()
    docs = json_lines(text)
    assert any("ingest ready" in str(doc["message"]) for doc in docs)
    assert "as-fh-1234" not in text and "hs-fh-5678" not in text
