"""A real worker process (``appservice-streams worker``) for integration tests."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

READY = "worker ready"
RESTART_ME = 70  # agents.fatal.EXIT_CODE


# Below the kernel's ephemeral range (32768-60999 here): a port the kernel hands out for binding to 0
# can be taken by any outgoing connection's source port before the worker binds it (a worker exited 2,
# "Address already in use", once in a full CI run); these are only ever taken by a bind.
_PORTS = range(20_000, 32_768)
_GIVEN: set[int] = set()  # never the same port twice in one test session (two calls before either binds)


def free_port() -> int:
    """A loopback port nothing listens on, outside the ephemeral range.

    Raises: OSError if 200 random tries found none.
    """
    for _ in range(200):
        port = random.choice(_PORTS)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise OSError("no free loopback port in 20000-32767")


def write_registration(directory: Path, appservice_id: str, url: str | None, **overrides: Any) -> Path:
    doc: dict[str, Any] = {
        "id": appservice_id,
        "url": url,
        "as_token": f"as-{appservice_id}",
        "hs_token": "hs-secret",
        "sender_localpart": f"{appservice_id}bot",
        "namespaces": {
            "users": [{"regex": f"@{appservice_id}_.*:example.org", "exclusive": True}],
            "rooms": [],
            "aliases": [],
        },
    }
    doc.update(overrides)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{appservice_id}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@dataclass
class WorkerProcess:
    registrations: Path
    app_id: str
    input_topic: str
    data_dir: Path
    log_path: Path
    retry_unit_ms: int = 100
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    http_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    instance: str = "worker"
    args: list[str] = field(default_factory=list)

    def sibling(self, instance: str, tmp_path: Path) -> WorkerProcess:
        """Another worker of the same group: its own instance id, data folder, log and ports."""
        return replace(
            self,
            instance=instance,
            data_dir=tmp_path / f"{instance}-data",
            log_path=tmp_path / f"{instance}.log",
            http_port=free_port(),
            metrics_port=free_port(),
            process=None,
            starts=0,
        )

    def command(self) -> list[str]:
        return [sys.executable, "-m", "agents.cli", "worker", "--registrations", str(self.registrations), *self.args]

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MATRIX_SERVER_NAME": "example.org",
            "APPSERVICE_STREAMS_APP_ID": self.app_id,
            "APPSERVICE_STREAMS_INPUT_TOPIC": self.input_topic,
            "APPSERVICE_STREAMS_DATA_DIR": str(self.data_dir),
            "APPSERVICE_STREAMS_RETRY_UNIT_MS": str(self.retry_unit_ms),
            "APPSERVICE_STREAMS_PARTITIONS": "4",
            "APPSERVICE_STREAMS_INPUT_PARTITIONS": "4",
            "APPSERVICE_STREAMS_INSTANCE_ID": f"{self.app_id}-{self.instance}",
            "APPSERVICE_STREAMS_HTTP_PORT": str(self.http_port),
            "APPSERVICE_STREAMS_METRICS_PORT": str(self.metrics_port),
            # Tests produce around the worker's start; a new app id reads its topic from the start.
            "APPSERVICE_STREAMS_START_FROM": "earliest",
            **self.extra_env,
        }

    def start(self, wait: bool = True, timeout_s: float = 60.0) -> None:
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        log.write(f"\n===== start {self.starts} =====\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            self.command(), env=self.env(), stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2]
        )
        log.close()
        if wait:
            self.wait_ready(timeout_s)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        marker = f"===== start {self.starts} ====="
        while time.monotonic() < deadline:
            text = self.log_text()
            if READY in text[text.rfind(marker) :]:
                return
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{text[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"worker not ready after {timeout_s} s:\n{self.log_text()[-3000:]}")

    def owned_partitions(self) -> list[int] | None:
        """Inbox partitions this worker said it owns at its latest rebalance."""
        lines = [line for line in self.log_text().splitlines() if "owns inbox partitions" in line]
        if not lines:
            return None
        listed = lines[-1].split("owns inbox partitions ")[1].split("]")[0].strip("[")
        return [int(p) for p in listed.split(",") if p.strip()]

    def restart_if_it_asked(self) -> bool:
        """Be the supervisor: restart a worker that exited with code 70 (nothing committed).

        Returns whether it restarted it.
        """
        if self.process is not None and self.process.poll() == RESTART_ME:
            self.start(wait=False)
            return True
        return False

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit."""
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
