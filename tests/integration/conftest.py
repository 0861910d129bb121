"""Integration fixtures: the real local broker, real worker processes, real appservices."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from agents.local_cluster import LocalCluster
from agents.local_kafka import LocalKafka
from agents.producer import EventProducer
from agents.topics import delete_prefixed
from tests.support.recording_appservice import RecordingAppservice
from tests.support.worker_process import WorkerProcess

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="session")
def kafka() -> LocalKafka:
    port = int(os.environ.get("APPSERVICE_STREAMS_KAFKA_PORT") or 9092)
    broker = LocalKafka(root=ROOT, port=port, controller_port=port + 1)
    broker.start()  # idempotent: CI starts it first, a developer may not have
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap  # for the worker processes
    return broker


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """A three-broker KRaft cluster, started by the first test that needs it and stopped after the session.

    Its ports: ``APPSERVICE_STREAMS_KAFKA_CLUSTER_PORT``, else the single
    broker's port + 8 (9092 → 9100-9105), so runs on other ports never meet.
    """
    single = int(os.environ.get("APPSERVICE_STREAMS_KAFKA_PORT") or 9092)
    port = int(os.environ.get("APPSERVICE_STREAMS_KAFKA_CLUSTER_PORT") or single + 8)
    nodes = LocalCluster(root=ROOT, port=port)
    nodes.start()
    yield nodes
    nodes.stop()


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def registrations(tmp_path: Path) -> Path:
    path = tmp_path / "registrations"
    path.mkdir()
    return path


@pytest.fixture
def worker(kafka: LocalKafka, tmp_path: Path, registrations: Path, run_id: str) -> Iterator[WorkerProcess]:
    process = WorkerProcess(
        registrations=registrations,
        app_id=f"test-{run_id}",
        input_topic=f"matrix.events.{run_id}",
        data_dir=tmp_path / "data",
        log_path=tmp_path / "worker.log",
    )
    yield process
    process.stop()
    # Each test's topics go with it: a dev broker kept for weeks would otherwise
    # hold thousands, and spend its heap on their metrics.
    delete_prefixed(kafka.bootstrap, (process.app_id, process.input_topic))


@pytest.fixture
def producer(kafka: LocalKafka, worker: WorkerProcess) -> Iterator[EventProducer]:
    p = EventProducer(kafka.bootstrap, worker.input_topic)
    yield p
    p.flush()


@pytest.fixture
async def appservice_factory() -> AsyncIterator[Callable[[], RecordingAppservice]]:
    started: list[RecordingAppservice] = []

    def make() -> RecordingAppservice:
        appservice = RecordingAppservice()
        started.append(appservice)
        return appservice

    yield make
    for appservice in started:
        await appservice.stop()
