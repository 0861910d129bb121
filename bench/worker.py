"""The real worker (``python -m agents.cli worker``) as a bench subprocess."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs

READY = "worker ready"
# Trees whose router runs on its own thread (own consumer group on the input) log this on each of its rebalances.
ROUTER_OWNS = "router owns input partitions"
_ROUTER_OWNS = re.compile(re.escape(ROUTER_OWNS) + r" \[([0-9, ]*)\]")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class BenchWorker:
    """One worker process; ``start`` may be called again after ``kill`` (same app id, same data dir)."""

    registrations: Path
    app_id: str
    input_topic: str
    data_dir: Path
    log_path: Path
    partitions: int = 8
    retry_unit_ms: int = 100
    bootstrap: str = "127.0.0.1:9092"
    source: Path = procs.ROOT  # the tree whose agents/ and streams/ run
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    metrics_port: int = field(default_factory=_free_port)

    def env(self) -> dict[str, str]:
        return {
            "MATRIX_SERVER_NAME": "example.org",
            # The rig's broker (--bootstrap-servers), not the worker's default 127.0.0.1:9092.
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "APPSERVICE_STREAMS_APP_ID": self.app_id,
            "APPSERVICE_STREAMS_INPUT_TOPIC": self.input_topic,
            "APPSERVICE_STREAMS_DATA_DIR": str(self.data_dir),
            "APPSERVICE_STREAMS_RETRY_UNIT_MS": str(self.retry_unit_ms),
            "APPSERVICE_STREAMS_PARTITIONS": str(self.partitions),
            "APPSERVICE_STREAMS_INPUT_PARTITIONS": str(self.partitions),
            # Static membership: a restarted worker takes its partitions back at once.
            "APPSERVICE_STREAMS_INSTANCE_ID": f"{self.app_id}-{self.data_dir.name}",
            # The worker's HTTP API (appservice ping) binds a fixed port by default;
            # several bench workers (and a retiring one) would collide on it.
            "APPSERVICE_STREAMS_HTTP_PORT": "0",
            # Metrics stay on (their cost is part of what is measured), each worker on a port of its own.
            "APPSERVICE_STREAMS_METRICS_PORT": str(self.metrics_port),
            "APPSERVICE_STREAMS_START_FROM": "earliest",  # loads may be produced before the worker starts
            "PYTHONPATH": str(self.source),
            **self.extra_env,
        }

    def start(self) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {self.starts} =====\n".encode())
        args = ["-m", "agents.cli", "worker", "--registrations", str(self.registrations), "--log-level", "info"]
        self.process = procs.spawn(args, env=self.env(), log_path=self.log_path, cwd=self.source)

    @property
    def pid(self) -> int:
        assert self.process is not None, "worker not started"
        return self.process.pid

    def log_since_start(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[text.rfind(f"===== start {self.starts} =====") :]

    def ready_count(self) -> int:
        """How many times this run of the process logged that its partitions were assigned."""
        return self.log_since_start().count(READY)

    def wait_ready(self, timeout_s: float = 60.0, count: int = 1) -> float:
        """Wait for the ``count``-th ready line; return the seconds waited.

        Raises:
            RuntimeError: the process exited or did not get ready in time.
        """
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if self.ready_count() >= count:
                return time.monotonic() - start
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log_since_start()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"worker not ready after {timeout_s} s:\n{self.log_since_start()[-2000:]}")

    def has_router_group(self) -> bool:
        """Whether the tree's router reads the input in a consumer group of its own (and logs ``ROUTER_OWNS``)."""
        router = self.source / "agents" / "router.py"
        return router.exists() and ROUTER_OWNS in router.read_text(errors="replace")

    def router_partitions(self) -> list[int] | None:
        """The input partitions the router owned after its last rebalance in this run; None before the first."""
        found = _ROUTER_OWNS.findall(self.log_since_start())
        if not found:
            return None
        return [int(p) for p in found[-1].split(",") if p.strip()]

    def kill(self) -> None:
        if self.process is not None:
            procs.kill(self.process)

    def stop(self) -> None:
        if self.process is not None:
            procs.stop(self.process)

    def wipe_state(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def rss_mb(self) -> float | None:
        return procs.rss_mb(self.pid)

    def peak_rss_mb(self) -> float | None:
        return procs.peak_rss_mb(self.pid)

    def cpu_seconds(self) -> float | None:
        return procs.cpu_seconds(self.pid)
