"""``APPSERVICE_STREAMS_LOG_FORMAT=json``: every line a real worker writes is one JSON object, tokens hidden."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson

from agents.producer import EventProducer
from tests.integration.events import message
from tests.integration.test_metrics import Factory
from tests.support.worker_process import WorkerProcess, write_registration


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
    lines = [line for line in text[text.rfind("===== start 1 =====") :].splitlines()[1:] if line]
    docs = [orjson.loads(line) for line in lines]  # raises on any line that is not one JSON object
    assert all({"time", "level", "logger", "message"} <= set(doc) for doc in docs)
    loggers = {doc["logger"].split(".")[0] for doc in docs}
    assert {"agents", "faust", "appservice_streams"} <= loggers, loggers
    assert any("worker ready" in doc["message"] for doc in docs)
    assert any("is DOWN" in doc["message"] for doc in docs) and any("is UP again" in doc["message"] for doc in docs)
    assert "as-bridge" not in text and "hs-secret" not in text  # the registration's tokens
