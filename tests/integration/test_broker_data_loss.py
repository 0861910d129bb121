"""A broker that lost the worker's topics: the worker says so in one line and exits 2, never crash-loops.

Simulated by deleting the worker's topics and groups between two runs while
its state folder stays (what ``docker compose down``/``up`` did to a broker
without a volume). ``--reset-state`` then rebuilds from what the broker has,
and new events are delivered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agents.local_kafka import LocalKafka
from agents.producer import EventProducer
from agents.topics import delete_prefixed
from tests.integration.events import message, numbers
from tests.support.recording_appservice import RecordingAppservice
from tests.support.worker_process import WorkerProcess, write_registration


@dataclass
class ResettingWorker(WorkerProcess):
    reset_state: bool = False

    def command(self) -> list[str]:
        return [*super().command(), *(["--reset-state"] if self.reset_state else [])]


def wait_exit(worker: WorkerProcess, timeout_s: float) -> int:
    assert worker.process is not None
    deadline = time.monotonic() + timeout_s
    while worker.process.poll() is None:
        assert time.monotonic() < deadline, f"worker still running after {timeout_s} s:\n{worker.log_text()[-3000:]}"
        time.sleep(0.1)
    return worker.process.returncode


async def test_a_broker_that_lost_the_topics_is_refused_in_one_line_then_reset_state_rebuilds(
    appservice_factory: Callable[[], RecordingAppservice],
    registrations: Path,
    kafka: LocalKafka,
    worker: WorkerProcess,
    tmp_path: Path,
) -> None:
    appservice = appservice_factory()
    await appservice.start()
    write_registration(registrations, "alpha", appservice.url)
    worker.start()
    producer = EventProducer(kafka.bootstrap, worker.input_topic)
    for n in range(5):
        producer.send_event(message(n, sender="@alpha_a:example.org"))
    producer.flush()
    await appservice.wait_for_events(5)
    worker.stop()
    delete_prefixed(kafka.bootstrap, (worker.app_id, worker.input_topic))  # the broker "lost its data"

    again = ResettingWorker(**{**worker.__dict__, "process": None, "log_path": tmp_path / "again.log"})
    again.start(wait=False)
    try:
        assert wait_exit(again, 60) == 2
        lines = [line for line in again.log_text().splitlines() if "appservice-streams worker:" in line]
        assert len(lines) == 1, again.log_text()[-3000:]
        assert "built from topics the broker no longer has" in lines[0] and "--reset-state" in lines[0]

        again.reset_state = True
        again.start()
        producer = EventProducer(kafka.bootstrap, worker.input_topic)
        for n in range(5, 10):
            producer.send_event(message(n, sender="@alpha_a:example.org"))
        producer.flush()
        events = await appservice.wait_for_events(10, timeout_s=30)
        assert numbers(events) == list(range(10))
    finally:
        again.stop()
