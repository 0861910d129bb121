"""The worker's Prometheus registry: counters per outcome, gauges from owned state, probes."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from agents.metrics import Metrics
from agents.metrics_http import Health, MetricsServer
from agents.status import WorkerRow, parse, render, unowned
from streams.dead_letter import Reason
from streams.delivery import Send
from streams.machine import AppserviceState, Phase, Txn
from streams.matrix import AppserviceID, TxnID
from streams.outcome import Delivered, HttpError, TimedOut
from tests.support.worker_process import free_port

BRIDGE = AppserviceID("bridge")


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value("appservice_streams_" + name, labels)


def send(txn_id: int, attempt: int = 0) -> Send:
    return Send(BRIDGE, TxnID(txn_id), attempt, b"{}")


def test_outcomes_count_sent_failed_by_reason_retries_and_durations() -> None:
    metrics = Metrics([BRIDGE])
    assert sample(metrics, "transactions_failed_total", appservice="bridge", reason="timeout") == 0  # series exist
    metrics.transaction_done(send(1), HttpError(503), 0.02)
    metrics.transaction_done(send(1, attempt=1), TimedOut("response"), 60.0)
    metrics.transaction_done(send(1, attempt=2), None, 0.001)
    metrics.transaction_done(send(1, attempt=3), Delivered(200), 0.03)
    assert sample(metrics, "transactions_failed_total", appservice="bridge", reason="5xx") == 1
    assert sample(metrics, "transactions_failed_total", appservice="bridge", reason="timeout") == 1
    assert sample(metrics, "transactions_failed_total", appservice="bridge", reason="internal") == 1
    assert sample(metrics, "transactions_sent_total", appservice="bridge") == 1
    assert sample(metrics, "transaction_retries_total", appservice="bridge") == 3
    assert sample(metrics, "transaction_duration_seconds_count", appservice="bridge") == 4
    assert sample(metrics, "transaction_duration_seconds_bucket", appservice="bridge", le="0.025") == 2


def test_items_sent_are_the_counts_of_the_owned_txn_in_flight() -> None:
    metrics = Metrics([BRIDGE])
    metrics.owned.assigned([0])
    metrics.owned.stepped(BRIDGE, 0, AppserviceState(phase=Phase.SENDING, inflight=Txn(TxnID(5), (100, 2, 0, 1))), 0)
    metrics.transaction_done(send(5), Delivered(200), 0.01)
    metrics.transaction_done(send(4), Delivered(200), 0.01)  # not the txn in flight: its counts are unknown
    assert sample(metrics, "items_sent_total", appservice="bridge", kind="event") == 100
    assert sample(metrics, "items_sent_total", appservice="bridge", kind="ephemeral") == 2
    assert sample(metrics, "items_sent_total", appservice="bridge", kind="to_device") == 0
    assert sample(metrics, "items_sent_total", appservice="bridge", kind="device") == 1
    assert sample(metrics, "transactions_sent_total", appservice="bridge") == 2


def test_appservice_gauges_exist_only_while_owned() -> None:
    metrics = Metrics([BRIDGE])
    down = AppserviceState(
        phase=Phase.BACKING_OFF,
        inflight=Txn(TxnID(5), (1, 0, 0, 0)),
        attempt=2,
        retry_at_ms=1,
        down_since_ms=1,
        queued=(30, 0, 0, 0),
    )
    metrics.owned.assigned([0])
    metrics.owned.stepped(BRIDGE, 0, down, 0)
    assert sample(metrics, "appservice_up", appservice="bridge") == 0
    assert sample(metrics, "appservice_state", appservice="bridge", state="backing_off") == 1
    assert sample(metrics, "appservice_state", appservice="bridge", state="idle") == 0
    assert sample(metrics, "appservice_backlog_items", appservice="bridge", kind="event") == 31
    assert sample(metrics, "appservice_failed_attempts", appservice="bridge") == 2
    assert (sample(metrics, "appservice_down_since_seconds", appservice="bridge") or 0) > 0
    metrics.owned.revoked()
    assert sample(metrics, "appservice_up", appservice="bridge") is None
    assert sample(metrics, "appservice_backlog_items", appservice="bridge", kind="event") is None


def test_a_down_appservice_shows_the_status_of_its_latest_failed_attempt_until_it_is_up() -> None:
    metrics = Metrics([BRIDGE])
    metrics.owned.assigned([0])
    inflight = Txn(TxnID(5), (1, 0, 0, 0))
    metrics.owned.stepped(BRIDGE, 0, AppserviceState(phase=Phase.SENDING, inflight=inflight), 0)
    metrics.transaction_done(send(5), HttpError(404, "M_UNRECOGNIZED"), 0.01)
    down = AppserviceState(phase=Phase.BACKING_OFF, inflight=inflight, attempt=1, retry_at_ms=1, down_since_ms=1)
    metrics.owned.stepped(BRIDGE, 0, down, 0)
    assert sample(metrics, "appservice_failure_status", appservice="bridge") == 404
    [row], _ = parse("w1:9109", generate_latest(metrics.registry).decode())
    assert row.failure_status == 404
    assert "backing_off (HTTP 404)" in render([row], [], now_unix=0)
    metrics.transaction_done(send(5, attempt=1), TimedOut("response"), 1.0)
    assert sample(metrics, "appservice_failure_status", appservice="bridge") == 0  # no HTTP answer at all
    metrics.transaction_done(send(5, attempt=2), Delivered(200), 0.01)
    metrics.owned.stepped(BRIDGE, 0, AppserviceState(), 0)
    assert sample(metrics, "appservice_failure_status", appservice="bridge") == 0


def test_assignment_and_lag_are_reported_for_owned_partitions_only() -> None:
    metrics = Metrics([BRIDGE])
    metrics.set_assignment("app-router", "matrix.events", [0, 1])
    metrics.router_stats(
        "app-router",
        "matrix.events",
        '{"topics": {"matrix.events": {"partitions": {"0": {"consumer_lag": 3}, "1": {"consumer_lag": 0}}}}}',
        [0, 1],
    )
    metrics.set_lag("app", {("app.inbox", 2): 7})
    assert sample(metrics, "consumer_lag", group="app-router", topic="matrix.events", partition="0") == 3
    assert sample(metrics, "consumer_lag", group="app", topic="app.inbox", partition="2") == 7
    assert sample(metrics, "assigned_partitions", topic="matrix.events") == 2
    metrics.set_assignment("app-router", "matrix.events", [1])  # partition 0 revoked
    assert sample(metrics, "consumer_lag", group="app-router", topic="matrix.events", partition="0") is None
    assert sample(metrics, "consumer_lag", group="app-router", topic="matrix.events", partition="1") == 0
    metrics.router_stats("app-router", "matrix.events", "not json", [1])  # logged, never raised
    assert sample(metrics, "consumer_lag", group="app-router", topic="matrix.events", partition="1") == 0


def test_dead_letters_count_by_fixed_reason() -> None:
    metrics = Metrics([BRIDGE])
    metrics.dead_lettered(Reason.TOO_LARGE)
    assert sample(metrics, "dead_letters_total", reason="too_large") == 1
    assert sample(metrics, "dead_letters_total", reason="malformed") == 0


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_the_listener_serves_metrics_and_probes_from_its_own_thread(loop_thread: asyncio.AbstractEventLoop) -> None:
    metrics, health = Metrics([BRIDGE]), Health()
    port = free_port()
    server = MetricsServer("127.0.0.1", port, metrics, health)
    server.start()
    try:
        status, text = get(port, "/metrics")
        assert status == 200 and 'appservice_streams_transactions_sent_total{appservice="bridge"} 0.0' in text
        assert get(port, "/livez") == (503, "event loop did not answer within 5.0 s\n")  # no loop known yet
        health.loop = loop_thread
        assert get(port, "/livez") == (200, "ok\n")
        assert get(port, "/readyz") == (503, "router not started\nno partition assignment\n")
        health.router_started = lambda: True
        health.router_alive = lambda: True
        health.assigned = True
        assert get(port, "/readyz") == (200, "ok\n")
        health.router_alive = lambda: False
        assert get(port, "/livez") == (503, "router thread ended\n")
        assert get(port, "/nothing")[0] == 404
    finally:
        server.stop()


def test_a_wedged_loop_fails_liveness_while_metrics_still_answer(loop_thread: asyncio.AbstractEventLoop) -> None:
    metrics, health = Metrics([BRIDGE]), Health()
    health.loop = loop_thread
    wedged = threading.Event()
    loop_thread.call_soon_threadsafe(lambda: wedged.wait(10))  # blocks the loop, as a stuck callback would
    assert not health.loop_answers(timeout_s=0.3)
    port = free_port()
    server = MetricsServer("127.0.0.1", port, metrics, health)
    server.start()
    try:
        assert get(port, "/metrics")[0] == 200
    finally:
        server.stop()
        wedged.set()
    assert health.loop_answers(timeout_s=5)


def test_lag_in_seconds_is_exported_beside_records_by_the_owner_only() -> None:
    metrics = Metrics([BRIDGE])
    metrics.set_assignment("app", "app.inbox", [0, 1, 2])
    metrics.set_lag("app", {("app.inbox", 0): 3, ("app.inbox", 1): 0, ("app.inbox", 2): 4}, {("app.inbox", 0): 17})
    assert metrics.oldest.wanted("app", metrics.behind("app")) == [("app.inbox", 0, 17)]  # 2: where it resumes unknown
    metrics.oldest.found("app", "app.inbox", 0, 17, 1_000)  # written at 1 s: long ago
    age = sample(metrics, "consumer_lag_seconds", group="app", topic="app.inbox", partition="0")
    assert age is not None and age > 50 * 365 * 86400
    assert sample(metrics, "consumer_lag_seconds", group="app", topic="app.inbox", partition="1") == 0
    assert sample(metrics, "consumer_lag_seconds", group="app", topic="app.inbox", partition="2") is None
    metrics.set_assignment("app", "app.inbox", [1])  # partition 0 revoked: its series and reading go
    assert sample(metrics, "consumer_lag_seconds", group="app", topic="app.inbox", partition="0") is None
    metrics.set_lag("app", {("app.inbox", 0): 3}, {("app.inbox", 0): 17})  # back here: read again first
    assert sample(metrics, "consumer_lag_seconds", group="app", topic="app.inbox", partition="0") is None


def test_the_router_lag_in_seconds_resumes_at_librdkafkas_committed_offset() -> None:
    metrics = Metrics([BRIDGE])
    metrics.set_assignment("app-router", "matrix.events", [0])
    partition = '{"consumer_lag": 3, "ls_offset": 10, "committed_offset": 7}'
    metrics.router_stats(
        "app-router", "matrix.events", f'{{"topics": {{"matrix.events": {{"partitions": {{"0": {partition}}}}}}}}}', [0]
    )
    assert metrics.behind("app-router") == {("matrix.events", 0): (3, 7)}


def test_the_shipped_rules_use_only_metrics_the_worker_exports() -> None:
    metrics = Metrics([BRIDGE])
    metrics.owned.assigned([0])
    metrics.owned.stepped(BRIDGE, 0, AppserviceState(), 0)
    metrics.set_lag("app", {("app.inbox", 0): 0}, {("app.inbox", 0): 0})
    metrics.set_assignment("app", "app.inbox", [0])
    exported = {s.name for family in metrics.registry.collect() for s in family.samples}
    rules = yaml.safe_load((Path(__file__).parents[2] / "deploy/prometheus/alerts.yml").read_text())
    used = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"\b(?:appservice_streams_|process_)[a-z_]+", rule["expr"])
    }
    assert used and used <= exported, used - exported


def test_status_reads_one_workers_metrics_into_rows_and_a_table() -> None:
    metrics = Metrics([BRIDGE])
    metrics.owned.assigned([0])
    metrics.owned.stepped(
        BRIDGE,
        0,
        AppserviceState(
            phase=Phase.RETRYING,
            inflight=Txn(TxnID(5), (100, 0, 0, 0)),
            attempt=4,
            retry_at_ms=1,
            down_since_ms=1,
            queued=(150, 2, 0, 0),
        ),
        0,
    )
    metrics.set_assignment("app", "app.inbox", [0, 1])
    metrics.set_lag("app", {("app.inbox", 0): 3, ("app.inbox", 1): 4}, {("app.inbox", 0): 9, ("app.inbox", 1): 2})
    metrics.oldest.found("app", "app.inbox", 0, 9, 0)  # written in 1970: the worst partition's age
    rows, worker = parse("w1:9109", generate_latest(metrics.registry).decode())
    [row] = rows
    assert (row.appservice, row.worker, row.up, row.state, row.failed_attempts) == (
        "bridge",
        "w1:9109",
        False,
        "retrying",
        4,
    )
    assert row.oldest_undelivered_s > 50 * 365 * 86400  # its oldest item arrived at 0 ms: in 1970
    assert row.backlog == {"event": 250, "ephemeral": 2, "to_device": 0, "device": 0}
    assert (worker.assigned_partitions, worker.lag) == ({"app.inbox": 2}, {"app": 7})
    assert worker.lag_s["app"] > 50 * 365 * 86400
    table = render(rows, [worker, WorkerRow("w2:9109", answered=False, error="refused")], now_unix=0)
    assert "bridge" in table and "retrying" in table and "NO" in table and "252" in table
    assert re.search(r"lag: app 7 \(\d+ s\)", table), table
    assert "worker w2:9109: NO ANSWER (refused)" in table
    assert unowned(rows, ["bridge", "bot"]) == ["bot"]
    assert "NOT EXPORTED BY ANY WORKER: bot" in render(rows, [worker], now_unix=0, missing=["bot"])


def test_the_alert_rules_fire_as_their_tests_say_when_promtool_is_there() -> None:
    """``promtool test rules`` on synthetic series (skipped without Prometheus's promtool; ``PROMTOOL`` = its path)."""
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    deploy = Path(__file__).parents[2] / "deploy/prometheus"
    for command in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run([promtool, *command], cwd=deploy, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
