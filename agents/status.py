"""``appservice-streams status``: every appservice across the workers, from their ``/metrics``.

Each worker exports the appservices of the inbox partitions it owns (and only
those), so scraping every worker gives each appservice once, from its owner.
An appservice shown by two workers is mid-rebalance; one shown by none has no
owner now (or its owner did not answer).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from agents.metrics import PREFIX

TIMEOUT_S = 5.0
KINDS = ("event", "ephemeral", "to_device", "device")


@dataclass
class AppserviceRow:
    appservice: str
    worker: str
    up: bool
    state: str
    backlog: dict[str, int]
    down_for_s: float
    oldest_undelivered_s: float
    failed_attempts: int
    last_success_unix: float | None
    failure_status: int = 0  # while DOWN, the HTTP status of the latest failed attempt (0: none)


@dataclass
class WorkerRow:
    worker: str
    answered: bool
    error: str | None = None
    ready: bool | None = None
    ready_detail: str = ""
    assigned_partitions: dict[str, int] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)  # group → records behind, summed over its partitions
    lag_s: dict[str, float] = field(default_factory=dict)  # group → oldest record not committed, worst partition


def metrics_url(worker: str) -> str:
    base = worker if "://" in worker else f"http://{worker}"
    return base.rstrip("/")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def parse(worker: str, text: str) -> tuple[list[AppserviceRow], WorkerRow]:
    """The rows of one worker's ``/metrics`` text."""
    appservices: dict[str, AppserviceRow] = {}
    row = WorkerRow(worker, answered=True)

    def appservice(name: str) -> AppserviceRow:
        if name not in appservices:
            appservices[name] = AppserviceRow(name, worker, True, "", dict.fromkeys(KINDS, 0), 0.0, 0.0, 0, None)
        return appservices[name]

    lag: dict[str, int] = defaultdict(int)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name.removeprefix(PREFIX), sample.labels, sample.value
            if name == "appservice_up":
                appservice(labels["appservice"]).up = value == 1
            elif name == "appservice_state" and value == 1:
                appservice(labels["appservice"]).state = labels["state"]
            elif name == "appservice_backlog_items":
                appservice(labels["appservice"]).backlog[labels["kind"]] = int(value)
            elif name == "appservice_down_since_seconds":
                appservice(labels["appservice"]).down_for_s = value
            elif name == "appservice_oldest_undelivered_seconds":
                appservice(labels["appservice"]).oldest_undelivered_s = value
            elif name == "appservice_failure_status":
                appservice(labels["appservice"]).failure_status = int(value)
            elif name == "appservice_failed_attempts":
                appservice(labels["appservice"]).failed_attempts = int(value)
            elif name == "appservice_last_success_timestamp_seconds":
                appservice(labels["appservice"]).last_success_unix = value
            elif name == "assigned_partitions":
                row.assigned_partitions[labels["topic"]] = int(value)
            elif name == "consumer_lag":
                lag[labels["group"]] += int(value)
            elif name == "consumer_lag_seconds":
                row.lag_s[labels["group"]] = max(value, row.lag_s.get(labels["group"], 0.0))
    row.lag = dict(lag)
    return sorted(appservices.values(), key=lambda r: r.appservice), row


def collect(workers: list[str]) -> tuple[list[AppserviceRow], list[WorkerRow]]:
    rows: list[AppserviceRow] = []
    worker_rows: list[WorkerRow] = []
    for worker in workers:
        base = metrics_url(worker)
        try:
            status, text = _get(base + "/metrics")
            if status != 200:
                raise OSError(f"HTTP {status}")
            found, worker_row = parse(worker, text)
            ready_status, ready_text = _get(base + "/readyz")
            worker_row.ready = ready_status == 200
            worker_row.ready_detail = ready_text.strip().replace("\n", "; ")
        except OSError as exc:
            worker_rows.append(WorkerRow(worker, answered=False, error=str(exc)))
            continue
        rows.extend(found)
        worker_rows.append(worker_row)
    rows.sort(key=lambda r: (r.appservice, r.worker))
    return rows, worker_rows


def unowned(rows: list[AppserviceRow], expected: list[str]) -> list[str]:
    """The appservices of ``expected`` no worker exports: no owner now, or their owner did not answer."""
    shown = {r.appservice for r in rows}
    return sorted(set(expected) - shown)


def as_json(rows: list[AppserviceRow], workers: list[WorkerRow], missing: list[str] | None = None) -> dict[str, object]:
    return {
        "appservices": [asdict(r) for r in rows],
        "workers": [asdict(w) for w in workers],
        "unowned": missing or [],
    }


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render(
    rows: list[AppserviceRow], workers: list[WorkerRow], now_unix: float, missing: list[str] | None = None
) -> str:
    table = [
        (
            "APPSERVICE",
            "STATE",
            "UP",
            "BACKLOG",
            "EVENTS",
            "EPHEMERAL",
            "TO-DEVICE",
            "OLDEST",
            "DOWN FOR",
            "LAST SUCCESS",
            "WORKER",
        )
    ]
    for r in rows:
        since = "-" if r.last_success_unix is None else _duration(now_unix - r.last_success_unix) + " ago"
        table.append(
            (
                r.appservice,
                r.state + (f" (HTTP {r.failure_status})" if r.failure_status else ""),
                "yes" if r.up else "NO",
                str(sum(r.backlog.values())),
                str(r.backlog["event"]),
                str(r.backlog["ephemeral"]),
                str(r.backlog["to_device"]),
                _duration(r.oldest_undelivered_s),
                _duration(r.down_for_s),
                since,
                r.worker,
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in table]
    lines.append("")
    if missing:
        lines.append(f"NOT EXPORTED BY ANY WORKER: {', '.join(missing)}")
    for w in workers:
        if not w.answered:
            lines.append(f"worker {w.worker}: NO ANSWER ({w.error})")
            continue
        lag = (
            ", ".join(
                f"{group} {records}" + (f" ({w.lag_s[group]:.0f} s)" if w.lag_s.get(group) else "")
                for group, records in sorted(w.lag.items())
            )
            or "-"
        )
        owned = ", ".join(f"{topic} {count}" for topic, count in sorted(w.assigned_partitions.items())) or "none"
        ready = "ready" if w.ready else f"NOT READY ({w.ready_detail})"
        lines.append(f"worker {w.worker}: {ready}; partitions: {owned}; lag: {lag}")
    return "\n".join(lines)


__all__ = ["AppserviceRow", "WorkerRow", "as_json", "collect", "parse", "render", "unowned"]
