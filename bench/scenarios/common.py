"""What every scenario shares: the sizes, the run context, and turning sink records into samples."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from bench import procs
from bench.baselines import READY
from bench.profile import Profiler, categorize, top_frames
from bench.results import ScenarioResult
from bench.rig import Rig
from bench.stats import NS_PER_MS, NS_PER_S, Bin, bins


@dataclass(frozen=True)
class Sizes:
    """Every scenario's size; each is a command-line flag."""

    appservices: int = 50
    throughput_events: int = 60_000
    workers: tuple[int, ...] = (1, 2)
    rate: float = 2000.0
    low_rate: float = 500.0  # a second latency/isolation point below the worker's capacity; 0 = off
    duration_s: float = 15.0
    warmup_s: float = 2.0
    catchup_events: int = 100_000
    catchup_retry_unit_ms: int = 1
    recovery_events: int = 50_000
    recovery_live_rate: float = 200.0
    memory_events: int = 1_000_000
    memory_steps: int = 5
    memory_appservices: int = 8
    repeat: int = 1
    isolation_rounds: int = 3  # at the main rate: hung runs alternating with reference runs, medians compared
    # capacity: rates offered in turn to one worker, lowest first, until one misses the latency targets
    capacity_rates: tuple[float, ...] = (250.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0)
    capacity_step_s: float = 10.0
    capacity_warmup_s: float = 1.0
    synapse_rate: float = 40.0  # synapse (opt-in): live messages/s through Synapse's client API
    synapse_live_s: float = 30.0
    synapse_outages: tuple[int, ...] = (500, 10_000)  # messages sent while the appservice is down


# Only checks that every scenario yields figures: sizes too small to judge a target by.
QUICK = Sizes(
    appservices=10,
    throughput_events=1000,
    workers=(1, 2),
    rate=500.0,
    low_rate=0.0,
    duration_s=1.0,
    warmup_s=0.2,
    catchup_events=500,
    recovery_events=500,
    recovery_live_rate=100.0,
    memory_events=1000,
    memory_steps=1,
    memory_appservices=4,
    isolation_rounds=1,
    capacity_rates=(250.0, 500.0),
    capacity_step_s=1.0,
    capacity_warmup_s=0.2,
    synapse_live_s=2.0,
    synapse_outages=(50,),
)

# In quick mode nothing should take long: give up on a wait after at most this long.
QUICK_PATIENCE_S = 20.0


def _no_wait() -> None:
    return None


@dataclass
class Context:
    prefix: str
    bootstrap: str
    quick: bool = False
    keep: bool = False
    source: Path = procs.ROOT
    profile: Path | None = None  # folder for py-spy samples of the worker (throughput, latency)
    results: dict[str, ScenarioResult] = field(default_factory=dict)
    # Set by ``Turns`` (quick mode): returns once this task may measure (see ``turn``).
    wait_turn: Callable[[], None] = _no_wait

    def turn(self) -> None:
        """Call when set-up is done and measuring starts: returns once it is this task's turn.

        A no-op when tasks run one after the other (a full run); in quick mode
        set-ups overlap and measurements still take turns, in order.
        """
        self.wait_turn()

    def patience(self, full_s: float) -> float:
        """A wait's timeout: ``full_s``, capped in quick mode where everything is small."""
        return min(full_s, QUICK_PATIENCE_S) if self.quick else full_s

    def rig(self, label: str) -> Rig:
        return Rig(self.prefix, label, self.bootstrap, self.keep, self.source, quick=self.quick)


def start_baseline_a(ctx: Context, rig: Rig) -> int:
    """Start baseline (a), the bare confluent-kafka consumer, on ``rig``'s topic and sinks; its pid once ready.

    Raises RuntimeError (with the end of its log) if it does not say it is ready within 60 s.
    """
    args = ["-m", "bench.baselines", "confluent", "--bootstrap", ctx.bootstrap, "--topic", rig.input_topic]
    args += ["--group", rig.app_id, "--sink-base", f"http://127.0.0.1:{rig.sinks.port}"]
    process = procs.spawn(args, log_path=rig.root / "baseline.log")
    rig.others.append(process)
    wait_ready_line(ctx, rig, "baseline.log")
    return process.pid


def wait_ready_line(ctx: Context, rig: Rig, log: str, timeout_s: float = 60.0) -> None:
    """Wait until a baseline's log says it is ready; RuntimeError with the log's end if not within ``timeout_s``."""
    path = rig.root / log
    timeout_s = ctx.patience(timeout_s)
    if not rig.wait_until(lambda: path.exists() and READY in path.read_text(errors="replace"), timeout_s, 0.05):
        raise RuntimeError(f"baseline not ready after {timeout_s} s: {path.read_text(errors='replace')[-2000:]}")


T = TypeVar("T")


class Turns:
    """Bookkeeping for tasks that set up at once and measure one after the other, in order.

    Task ``i``'s turn comes once task ``i - 1`` is done (task 0: once the parent
    context's turn came); ``waited[i]`` is how long it waited for it.
    """

    def __init__(self, parent: Context, count: int, on_turn: Callable[[int], None] | None = None) -> None:
        self._parent = parent
        self._done = [threading.Event() for _ in range(count)]
        self._had_turn = [False] * count
        self._on_turn = on_turn
        self.waited = [0.0] * count

    def context(self, index: int) -> Context:
        return dataclasses.replace(self._parent, wait_turn=lambda: self._wait(index))

    def _wait(self, index: int) -> None:
        start = time.monotonic()
        if index == 0:
            self._parent.turn()
        else:
            self._done[index - 1].wait()
        self.waited[index] += time.monotonic() - start
        if not self._had_turn[index]:
            self._had_turn[index] = True
            if self._on_turn is not None:
                self._on_turn(index)

    def done(self, index: int) -> None:
        self._done[index].set()


def in_turns(ctx: Context, tasks: Sequence[Callable[[Context], T]]) -> list[T]:
    """Run ``tasks`` in order; in quick mode each in its own thread, so their set-ups overlap.

    Each task calls ``ctx.turn()`` (on the context it is given) before it
    measures. The first exception, in task order, is raised once all ended.
    """
    if not ctx.quick:
        return [task(ctx) for task in tasks]
    turns = Turns(ctx, len(tasks))
    out: list[T | None] = [None] * len(tasks)
    errors: list[BaseException | None] = [None] * len(tasks)

    def body(index: int) -> None:
        try:
            out[index] = tasks[index](turns.context(index))
        except BaseException as exc:
            errors[index] = exc
        finally:
            turns.done(index)

    threads = [threading.Thread(target=body, args=(i,), daemon=True, name=f"task{i}") for i in range(len(tasks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
    return cast(list[T], out)


def names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


@dataclass(frozen=True)
class Samples:
    """Per delivered event: produce time (s since ``start_ns``), latency (ms), appservice, seq."""

    t_s: list[float]
    latency_ms: list[float]
    appservice: list[str]
    seq: list[int]


def samples(doc: dict[str, Any], start_ns: int, only: Iterable[str] | None = None) -> Samples:
    """Samples from a sink ``events()`` document, sorted by produce time, optionally for some appservices."""
    wanted = None if only is None else set(only)
    table = doc["names"]
    rows = sorted(
        (ts, arrival, table[index], seq)
        for arrival, ts, index, seq in zip(doc["arrival"], doc["ts"], doc["as"], doc["seq"], strict=True)
        if wanted is None or table[index] in wanted
    )
    return Samples(
        [(ts - start_ns) / NS_PER_S for ts, _, _, _ in rows],
        [(arrival - ts) / NS_PER_MS for ts, arrival, _, _ in rows],
        [name for _, _, name, _ in rows],
        [seq for _, _, _, seq in rows],
    )


def after_warmup(s: Samples, warmup_s: float) -> list[float]:
    return [ms for t, ms in zip(s.t_s, s.latency_ms, strict=True) if t >= warmup_s]


def bin_series(s: Samples, width_s: float = 0.5) -> dict[str, list[float]]:
    if not s.t_s:
        return {"t_s": [], "p50_ms": [], "p99_ms": [], "max_ms": []}
    found: list[Bin] = bins(s.t_s, s.latency_ms, width_s)
    return {
        "t_s": [b.start_s for b in found],
        "p50_ms": [round(b.p50, 3) for b in found],
        "p99_ms": [round(b.p99, 3) for b in found],
        "max_ms": [round(b.max, 3) for b in found],
    }


def duplicates_and_missing(delivered_seqs: Sequence[int], produced: int) -> tuple[int, int]:
    """``(duplicates, missing)`` given the seqs delivered for appservices that were sent ``produced`` events."""
    distinct = len(set(delivered_seqs))
    return len(delivered_seqs) - distinct, max(0, produced - distinct)


class CpuMeter:
    """CPU used by some processes between creation and ``stop``: cores (1.0 = one core busy) and seconds."""

    def __init__(self, pids: Sequence[int]) -> None:
        self._pids = list(pids)
        self._cpu0 = [procs.cpu_seconds(p) or 0.0 for p in self._pids]
        self._t0 = time.monotonic()
        self.cores: list[float] = []
        self.seconds: list[float] = []  # process CPU time (user + system) per pid

    def stop(self) -> list[float]:
        """The cores per pid (``seconds`` holds the CPU time behind them)."""
        wall = max(1e-9, time.monotonic() - self._t0)
        self.seconds = [(procs.cpu_seconds(p) or c0) - c0 for p, c0 in zip(self._pids, self._cpu0, strict=True)]
        self.cores = [used / wall for used in self.seconds]
        return self.cores


# A worker's threads, grouped: what each would take along if it moved (the router to a process of its own, say).
THREAD_GROUPS = ("main thread", "router thread", "other Python threads", "librdkafka threads")


def thread_group(pid: int, tid: int, name: str) -> str:
    """Which of ``THREAD_GROUPS`` a worker thread is in (the router names itself, librdkafka's are ``rdk:…``)."""
    if tid == pid:
        return THREAD_GROUPS[0]
    if name == "router":
        return THREAD_GROUPS[1]
    if name.startswith("rdk:"):
        return THREAD_GROUPS[3]
    return THREAD_GROUPS[2]


class ThreadMeter:
    """CPU seconds per ``THREAD_GROUPS`` of one process between creation and ``stop`` (threads that ended are lost)."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._before = procs.thread_cpu_seconds(pid)

    def stop(self) -> dict[str, float]:
        used = dict.fromkeys(THREAD_GROUPS, 0.0)
        for (tid, name), seconds in procs.thread_cpu_seconds(self._pid).items():
            used[thread_group(self._pid, tid, name)] += seconds - self._before.get((tid, name), 0.0)
        return used


def cpu_us_per(cpu_s: float, count: int) -> float | None:
    """Microseconds of CPU per item (per delivered txn, per event); None when nothing was delivered."""
    return 1e6 * cpu_s / count if count else None


def start_profile(ctx: Context, pid: int, label: str) -> Profiler | None:
    if ctx.profile is None:
        return None
    profiler = Profiler(pid, ctx.profile, label)
    return profiler if profiler.start() else None


def finish_profile(result: ScenarioResult, profiler: Profiler | None, label: str) -> None:
    """Stop ``profiler`` and keep its top frames in ``result.config["profile"][label]``."""
    if profiler is None:
        return
    stacks = profiler.stop()
    own, inclusive = top_frames(stacks)
    result.config.setdefault("profile", {})[label] = {
        "samples": sum(count for _, count in stacks),
        "svg": str(profiler.svg),
        "folded": str(profiler.raw),
        "self": [[f.name, round(f.self_pct, 1)] for f in own],
        "inclusive": [[f.name, round(f.total_pct, 1)] for f in inclusive],
        "categories": [[name, round(pct, 1)] for name, pct in categorize(stacks)],
    }


def downsample(xs: Sequence[float], ys: Sequence[float], points: int = 400) -> tuple[list[float], list[float]]:
    if len(xs) <= points:
        return list(xs), list(ys)
    step = len(xs) / points
    picked = [int(i * step) for i in range(points)] + [len(xs) - 1]
    return [xs[i] for i in picked], [ys[i] for i in picked]
