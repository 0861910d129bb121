"""Sampling a worker with py-spy while a scenario runs, and reading the samples as top-N tables.

``Profiler(pid, folder).start()`` runs ``py-spy record --gil --format raw``
(folded stacks: ``frame;frame;frame count``) until ``stop()``, and also writes
a flame graph SVG from the same samples. ``top_frames`` is pure: it turns
folded stacks into the frames with the most samples, self and inclusive.

Only the thread holding the GIL is sampled: the worker is bound by its one
interpreter, so the tables say where the interpreter's time goes. Sampling
every thread counted threads blocked in C as busy (the router waiting in
``Producer.flush`` came out as a top frame; see
docs/decisions/profile-the-gil.md). Time in librdkafka's own
threads is not in the samples; the scenarios' "CPU per delivered txn"
figures by thread group have it.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Frame:
    name: str
    self_pct: float
    total_pct: float


def parse_folded(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """``frame;frame;leaf 12`` lines into ``([frames…], count)``; malformed lines are skipped."""
    out = []
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def short(frame: str) -> str:
    """``deliver (agents/deliverer.py:152)`` → ``deliver (agents/deliverer.py)``: lines differ per sample."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    path = path.removeprefix("/work/main/")
    return f"{name} ({path})" if path else name


def top_frames(stacks: list[tuple[list[str], int]], limit: int = 15) -> tuple[list[Frame], list[Frame]]:
    """``(by self time, by inclusive time)``, each the ``limit`` frames with the most samples."""
    total = sum(count for _, count in stacks) or 1
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        names = [short(f) for f in frames]
        if names:
            own[names[-1]] += count
        for name in set(names):
            inclusive[name] += count

    def table(counter: Counter[str]) -> list[Frame]:
        return [
            Frame(name, 100 * own[name] / total, 100 * inclusive[name] / total)
            for name, _ in counter.most_common(limit)
        ]

    return table(own), table(inclusive)


# Where a sample's time goes: the first rule (in this order) whose marker is in its stack.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("ours: router (route_one)", "(agents/router.py"),
    ("ours: deliverer step (machine, backlog, codec)", "(agents/stepper.py"),
    ("ours: HTTP send + outcome report", "(agents/senders.py"),
    ("ours: other agents/ streams/", "(agents/"),
    ("ours: other agents/ streams/", "(streams/"),
    ("aiohttp client", "aiohttp/"),
    ("Faust producer buffer / topic publish", "faust/transport/producer.py"),
    ("Faust producer buffer / topic publish", "faust/topics.py"),
    ("aiokafka producer (sender, accumulator)", "aiokafka/producer/"),
    ("Faust consumer + stream iteration", "faust/transport/"),
    ("Faust consumer + stream iteration", "faust/streams.py"),
    ("Faust consumer + stream iteration", "faust/channels.py"),
    ("aiokafka consumer (fetcher)", "aiokafka/consumer/"),
    ("aiokafka protocol + connection", "aiokafka/"),
    ("Faust tables / RocksDB store", "faust/stores/"),
    ("Faust tables / RocksDB store", "faust/tables/"),
    ("Faust other (agents, sensors, mode)", "faust/"),
    ("Faust other (agents, sensors, mode)", "mode/"),
    ("asyncio event loop only", "asyncio/"),
)


_DISPATCH = ("Handle._run ", "BaseEventLoop._run_once ", "BaseEventLoop.run_forever ")


def categorize(stacks: list[tuple[list[str], int]]) -> list[tuple[str, float]]:
    """Per category, the percentage of samples whose stack matches it first (see ``CATEGORIES``)."""
    total = sum(count for _, count in stacks) or 1
    found: Counter[str] = Counter()
    for frames, count in stacks:
        names = [short(f) for f in frames]
        # Only what the event loop dispatched counts: the worker's main module and
        # mode's Worker sit at the root of every main-thread stack.
        cut = max((i for i, n in enumerate(names) if n.startswith(_DISPATCH)), default=-1)
        joined = ";".join(names[cut + 1 :])
        if not joined:
            found["asyncio event loop only"] += count
            continue
        label = next((name for name, marker in CATEGORIES if marker in joined), "other")
        found[label] += count
    return [(name, 100 * count / total) for name, count in found.most_common()]


class Profiler:
    """Two py-spy samplers on one process (non-blocking): folded stacks for the tables, an SVG flame graph."""

    def __init__(self, pid: int, folder: Path, label: str, rate_hz: int = 100) -> None:
        self.pid = pid
        self.raw = folder / f"{label}.folded"
        self.svg = folder / f"{label}.svg"
        self.rate_hz = rate_hz
        self._processes: list[subprocess.Popen[bytes]] = []
        folder.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def available() -> str | None:
        found = Path(sys.executable).parent / "py-spy"
        return str(found) if found.exists() else shutil.which("py-spy")

    def start(self) -> bool:
        """Start sampling; ``False`` when py-spy is not installed."""
        executable = self.available()
        if executable is None:
            return False
        for output, fmt in ((self.raw, "raw"), (self.svg, "flamegraph")):
            args = [executable, "record", "--pid", str(self.pid), "--rate", str(self.rate_hz), "--nonblocking", "--gil"]
            args += ["--format", fmt, "--output", str(output)]
            self._processes.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return True

    def stop(self) -> list[tuple[list[str], int]]:
        """Stop sampling (py-spy writes its files on SIGINT) and return the folded stacks."""
        for process in self._processes:
            process.send_signal(signal.SIGINT)
        for process in self._processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        return parse_folded(self.raw.read_text().splitlines()) if self.raw.exists() else []
