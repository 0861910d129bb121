"""A real ingest process (``appservice-streams ingest``) for integration tests, and a reader of what it produced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from tests.support.worker_process import free_port

READY = "ingest ready"


@dataclass
class IngestProcess:
    registration: Path
    topic: str
    log_path: Path
    port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
            command = [sys.executable, "-m", "agents.cli", "ingest", "--registration", str(self.registration)]
            command += ["--listen", f"127.0.0.1:{self.port}", "--topic", self.topic, *self.extra_args]
            env = {**os.environ, "APPSERVICE_STREAMS_INPUT_PARTITIONS": "4", **self.extra_env}
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2]
            )
        deadline = time.monotonic() + timeout_s
        marker = f"===== start {self.starts} ====="
        while time.monotonic() < deadline:
            text = self.log_text()
            if READY in text[text.rfind(marker) :]:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"ingest exited with {self.process.returncode}:\n{text[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"ingest not ready after {timeout_s} s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown, a Kafka transaction may be left open."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def committed_records(bootstrap: str, topic: str, timeout_s: float = 20.0) -> list[tuple[int, bytes, bytes]]:
    """Every committed record of ``topic`` (read_committed), as (partition, key, value), partition by partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "test-reader",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = list(consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        records: list[tuple[int, bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while len(at_end) < len(partitions):
            assert time.monotonic() < deadline, f"{topic} not read to its end in {timeout_s} s"
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                at_end.add(message.partition())
                continue
            records.append((message.partition(), message.key(), message.value()))
        return sorted(records, key=lambda r: r[0])
    finally:
        consumer.close()
