"""One scenario's world: a temp folder, registrations, the sink process, workers, a load generator.

Names are unique per run and scenario (``bench-<run>-<scenario>``: the app id,
so the consumer group and Faust's topics, and ``…-events``, the input topic),
so runs never read each other's records. ``close`` stops every process it
started and deletes the temp folder; ``bench.cli`` deletes the run's topics.
With ``quick`` (``--quick``) it skips waits that only matter for figures:
the settling pause after workers start, a producer's first connection.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from bench import procs
from bench.broker import Lag
from bench.load import SERVER_NAME, LoadGenerator
from bench.progress import Progress
from bench.sinks import SinkProcess
from bench.worker import BenchWorker

HS_TOKEN = "bench-hs-token"


def write_registration(directory: Path, name: str, url: str) -> Path:
    """A Synapse-format registration whose users are ``@<name>_*:example.org``."""
    doc: dict[str, Any] = {
        "id": name,
        "url": url,
        "as_token": f"as-{name}",
        "hs_token": HS_TOKEN,
        "sender_localpart": f"{name}bot",
        "namespaces": {
            "users": [{"regex": f"@{name}_.*:{SERVER_NAME}", "exclusive": True}],
            "rooms": [],
            "aliases": [],
        },
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


class Rig:
    def __init__(
        self,
        prefix: str,
        scenario: str,
        bootstrap: str,
        keep: bool = False,
        source: Path = procs.ROOT,
        quick: bool = False,
    ) -> None:
        self.source = source
        self.quick = quick
        self.scenario = scenario
        self.app_id = f"{prefix}-{scenario}"
        self.input_topic = f"{self.app_id}-events"
        self.bootstrap = bootstrap
        self.root = Path(tempfile.mkdtemp(prefix=f"{self.app_id}-"))
        self.registrations = self.root / "registrations"
        self.registrations.mkdir()
        self.sinks = SinkProcess()
        self.workers: list[BenchWorker] = []
        self.others: list[Any] = []  # baseline processes
        self.keep = keep
        self._lag: Lag | None = None

    # ------------------------------------------------------------ set-up

    def start_sinks(self, names: Sequence[str], modes: dict[str, str] | None = None) -> list[str]:
        self.sinks.start()
        for name in names:
            write_registration(self.registrations, name, self.sinks.url(name))
        for name, mode in (modes or {}).items():
            self.sinks.set_mode(name, mode)
        from agents.topics import ensure_topic

        ensure_topic(self.bootstrap, self.input_topic, 8)
        return list(names)

    def worker(self, retry_unit_ms: int = 100, suffix: str = "") -> BenchWorker:
        index = len(self.workers)
        worker = BenchWorker(
            registrations=self.registrations,
            app_id=self.app_id + suffix,
            input_topic=self.input_topic,
            data_dir=self.root / f"data{index}",
            log_path=self.root / f"worker{index}.log",
            retry_unit_ms=retry_unit_ms,
            bootstrap=self.bootstrap,
            source=self.source,
            # The rig's broker, not whatever KAFKA_BOOTSTRAP_SERVERS (or 127.0.0.1:9092) the bench inherited.
            extra_env={"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap},
        )
        self.workers.append(worker)
        return worker

    def start_workers(self, count: int, retry_unit_ms: int = 100, timeout_s: float = 60.0) -> list[BenchWorker]:
        """Start ``count`` workers of one group, one after the other, and wait until the group is stable."""
        started: list[BenchWorker] = []
        for _ in range(count):
            seen = [w.ready_count() for w in started]
            worker = self.worker(retry_unit_ms)
            worker.start()
            worker.wait_ready(timeout_s)
            for earlier, ready_lines in zip(started, seen, strict=True):
                earlier.wait_ready(timeout_s, count=ready_lines + 1)  # the rebalance reached it too
            started.append(worker)
        if started and started[0].has_router_group():
            self._wait_routers(started, timeout_s)
        if not self.quick:
            time.sleep(0.5)
        return started

    def _wait_routers(self, workers: Sequence[BenchWorker], timeout_s: float) -> None:
        """Wait until the routers' own group settled too: each input partition owned by exactly one worker.

        It rebalances apart from the Faust group that "worker ready" follows,
        and seconds later; measuring before would time the router's join.
        """
        wanted = set(range(workers[0].partitions))

        def settled() -> bool:
            owned = [w.router_partitions() for w in workers]
            flat = [p for parts in owned if parts is not None for p in parts]
            return None not in owned and len(flat) == len(set(flat)) and set(flat) == wanted

        if not self.wait_until(settled, timeout_s, 0.05):
            owned = [w.router_partitions() for w in workers]
            raise RuntimeError(
                f"routers own input partitions {owned} after {timeout_s} s, not each of {sorted(wanted)}"
            )

    def generator(self, linger_ms: float = 1.0, first_seq: int = 0) -> LoadGenerator:
        """A producer to the input topic; in quick mode already connected (a cold one spends ~0.5 s first)."""
        return LoadGenerator(
            self.bootstrap, self.input_topic, linger_ms=linger_ms, first_seq=first_seq, eager=self.quick
        )

    @property
    def lag(self) -> Lag:
        if self._lag is None:
            self._lag = Lag(self.bootstrap)
        return self._lag

    def inbox_topic(self, worker: BenchWorker) -> str:
        return f"{worker.app_id}.inbox"

    def changelog_topic(self, worker: BenchWorker) -> str:
        """The ``appservices`` table's changelog (``Settings.appservices_changelog_topic``)."""
        return f"{worker.app_id}-appservices-changelog"

    def groups(self, worker: BenchWorker) -> list[str]:
        """The worker's consumer groups: the Faust agents' (``app_id``) and, in newer trees, the router's.

        Since the router runs on its own thread it reads the input topic in
        ``<app_id>-router`` (``Settings.router_group``); before, the agents'
        group did. Lags are taken from whichever group committed on a topic,
        so ``--source`` may be either kind of tree.
        """
        return [worker.app_id, f"{worker.app_id}-router"]

    # ------------------------------------------------------------ waiting

    def exited(self) -> str:
        """Which of the rig's workers died while running, and their last CRITICAL/ERROR line; "" when none."""
        out = []
        for index, worker in enumerate(self.workers):
            if worker.process is None or worker.process.poll() is None:
                continue
            lines = [ln for ln in worker.log_since_start().splitlines() if "CRITICAL" in ln or "ERROR" in ln]
            last = f": {lines[-1].strip()[:300]}" if lines else ""
            out.append(f"worker{index} exited with {worker.process.returncode}{last}")
        return "; ".join(out)

    def all_exited(self) -> bool:
        """The rig has workers and none of them runs: nothing more will be delivered or parked."""
        return bool(self.workers) and all(w.process is None or w.process.poll() is not None for w in self.workers)

    def wait_delivered(
        self, count: int, timeout_s: float, label: str, names: Sequence[str] | None = None, stall_s: float = 30.0
    ) -> int:
        """Wait until the sinks hold ``count`` events (of ``names``, default all); return how many they hold.

        Gives up after ``timeout_s``, after ``stall_s`` without progress, or once every worker exited.
        """
        progress = Progress(f"{self.scenario}: {label}", count, "ev")
        start = time.monotonic()
        last_change, last = start, -1
        delivered = 0
        while True:
            stats = self.sinks.stats()
            delivered = sum(s["events"] for n, s in stats.items() if names is None or n in names)
            progress.update(delivered)
            now = time.monotonic()
            if delivered != last:
                last, last_change = delivered, now
            if delivered >= count or now - start > timeout_s or now - last_change > stall_s or self.all_exited():
                break
            time.sleep(0.1)
        progress.close("" if delivered >= count else f"gave up with {count - delivered} missing{self._why()}")
        return delivered

    def _why(self) -> str:
        exited = self.exited()
        return f" ({exited})" if exited else ""

    def wait_parked(self, worker: BenchWorker, timeout_s: float, label: str, total: int) -> float | None:
        """Wait until the worker's group has no lag on the input and inbox topics; seconds waited, None on timeout."""
        progress = Progress(f"{self.scenario}: {label}", total, "ev")
        start = time.monotonic()
        topics = [self.input_topic, self.inbox_topic(worker)]

        def poll(lag: int) -> None:
            progress.update(max(0, total - lag))

        from bench.broker import wait_for_no_lag

        ok = wait_for_no_lag(self.lag, self.groups(worker), topics, timeout_s, on_poll=poll, give_up=self.all_exited)
        progress.close("" if ok else f"timed out{self._why()}")
        return time.monotonic() - start if ok else None

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(step_s)
        return False

    # ------------------------------------------------------------ tear-down

    def close(self) -> None:
        """Stop the sinks now; workers and baselines leave their groups in the background, then the temp folder goes."""
        self.sinks.stop()
        if self._lag is not None:
            self._lag.close()
        processes = [w.process for w in self.workers if w.process is not None] + list(self.others)
        root = self.root
        procs.retire(processes, None if self.keep else lambda: shutil.rmtree(root, ignore_errors=True))

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
