"""Child processes of the bench: started in one place, all ended on exit, measured from /proc.

Every child gets ``PR_SET_PDEATHSIG``: if the bench itself dies (even by
SIGKILL) the kernel kills its workers, sinks and baselines too, so nothing is
left running against the broker.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
_PR_SET_PDEATHSIG = 1
_children: list[subprocess.Popen[bytes]] = []
_retiring: list[threading.Thread] = []


def _load_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Looked up once here, not in the forked child: ``spawn`` runs from several
# threads in quick mode, and loading a library between fork and exec can hang.
_prctl = _load_prctl()


def _die_with_parent() -> None:
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    args: Sequence[str],
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    stdout_pipe: bool = False,
    cwd: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """Start ``python args...`` in ``cwd`` (the repository root); output to ``log_path`` (or a pipe)."""
    out: IO[bytes] | int
    log = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115 - the child owns it
    out = subprocess.PIPE if stdout_pipe else (log if log is not None else subprocess.DEVNULL)
    try:
        process = subprocess.Popen(
            [sys.executable, *args],
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=out,
            stderr=log if log is not None else subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    finally:
        if log is not None:
            log.close()
    _children.append(process)
    return process


def stop(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            kill(process)
    with contextlib.suppress(ValueError):
        _children.remove(process)


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap: no shutdown hooks run in the child."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait(10)


def retire(processes: Sequence[subprocess.Popen[bytes]], then: Callable[[], None] | None = None) -> None:
    """Stop ``processes`` gracefully in a background thread, then run ``then``; ``stop_all`` waits for it.

    A Faust worker takes a second or two to leave its group cleanly; the next
    scenario need not wait for that.
    """

    def run() -> None:
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(OSError):
                    process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                kill(process)
        if then is not None:
            then()

    thread = threading.Thread(target=run, name="retire", daemon=True)
    thread.start()
    _retiring.append(thread)


def stop_all() -> None:
    """End every child still running: SIGTERM to all, a short grace, then SIGKILL."""
    for thread in _retiring:
        thread.join(30)
    _retiring.clear()
    running = [p for p in _children if p.poll() is None]
    for process in running:
        with contextlib.suppress(OSError):
            process.send_signal(signal.SIGTERM)
    for process in running:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            kill(process)
    _children.clear()


def _status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_mb(pid: int) -> float | None:
    kb = _status_kb(pid, "VmRSS")
    return None if kb is None else kb / 1024


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM: the highest RSS the process has had."""
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else kb / 1024


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def thread_cpu_seconds(pid: int) -> dict[tuple[int, str], float]:
    """User + system CPU time so far of each live thread of ``pid``, by (thread id, OS name)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[tuple[int, str], float] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[(int(task.name), name)] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def dir_size_mb(path: Path) -> float:
    total = 0
    for item in path.rglob("*"):
        with contextlib.suppress(OSError):
            if item.is_file():
                total += item.stat().st_size
    return total / (1024 * 1024)
