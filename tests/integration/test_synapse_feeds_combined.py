"""The two feeds together, as the README recommends, and side by side for latency.

One Synapse (``.venv-synapse``) loads the feed module (room events → topic
``combined``) and two firehose registrations:

* ``firehose``: its ingest runs with ``--without-room-events`` into the same
  topic ``combined``: typing, receipts (and to-device, device data) come
  through it, room events only through the module, so each is on the topic
  once. Worker A reads ``combined`` for the real appservice ``bridge``.
* ``firehose-full``: an ingest with room events into topic ``full``, worker B
  for a second copy of ``bridge``: the ingest-only deployment, measured in
  the same run.

Synapse also delivers directly to a control appservice (same users namespace):
the reference for what and in which order, and the third latency figure.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from agents.local_kafka import LocalKafka
from agents.topics import delete_prefixed
from bench.synapse import (
    SERVER_NAME,
    SYNAPSE_PYTHON,
    Client,
    Synapse,
    register_appservice_user,
    register_user,
    registration_doc,
)
from tests.support.ingest_process import IngestProcess
from tests.support.recording_appservice import RecordingAppservice
from tests.support.worker_process import WorkerProcess, free_port

ROOT = Path(__file__).parents[2]
BRIDGE_AS_TOKEN = "as-bridge-combined"


def _firehose(path: Path, appservice_id: str, port: int) -> None:
    printed = subprocess.run(
        [
            *(sys.executable, "-m", "agents.cli", "ingest", "--print-registration"),
            *("--id", appservice_id, "--url", f"http://127.0.0.1:{port}"),
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    path.write_bytes(printed.stdout)


@dataclass
class Combined:
    synapse: Synapse
    combined: RecordingAppservice  # behind worker A: module (room events) + ephemeral-only ingest
    full: RecordingAppservice  # behind worker B: the ingest with room events
    control: RecordingAppservice  # Synapse directly
    alice: Client
    bob: Client
    timings: dict[str, float] = field(default_factory=dict)

    async def until(self, condition: Any, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.02)


def ids(appservice: RecordingAppservice) -> list[str]:
    return [e["event_id"] for r in appservice.requests for e in r.events]


def ephemeral(appservice: RecordingAppservice, edu_type: str) -> list[dict[str, Any]]:
    return [e for r in appservice.requests for e in r.document.get("ephemeral", []) if e["type"] == edu_type]


def arrivals(appservice: RecordingAppservice) -> dict[str, float]:
    first: dict[str, float] = {}
    for request in appservice.requests:
        for event in request.events:
            first.setdefault(event["event_id"], request.at)
    return first


@pytest.fixture(scope="module")
async def combined(kafka: LocalKafka, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Combined]:
    if not SYNAPSE_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{SYNAPSE_PYTHON} is missing: `make test` installs it (`make synapse`)")
        pytest.skip("Synapse is not installed: run `make synapse`")
    home = tmp_path_factory.mktemp("combined")
    run = os.urandom(4).hex()
    topic_a, topic_b = f"matrix.events.combined-{run}", f"matrix.events.full-{run}"
    apps = {name: RecordingAppservice() for name in ("combined", "full", "control")}
    ports = {name: free_port() for name in ("combined", "full", "control", "ingest_a", "ingest_b")}
    workers: list[WorkerProcess] = []
    for name, topic in (("combined", topic_a), ("full", topic_b)):
        folder = home / f"registrations-{name}"
        folder.mkdir()
        registration = registration_doc("bridge", f"http://127.0.0.1:{ports[name]}", BRIDGE_AS_TOKEN, True)
        (folder / "bridge.yaml").write_text(yaml.safe_dump({**registration, "receive_ephemeral": True}))
        workers.append(
            WorkerProcess(
                registrations=folder,
                app_id=f"{name}-{run}",
                input_topic=topic,
                data_dir=home / f"data-{name}",
                log_path=home / f"worker-{name}.log",
                instance=name,
                extra_env={"MATRIX_SERVER_NAME": SERVER_NAME},
            )
        )
    (home / "bridge.yaml").write_text(
        yaml.safe_dump({**registration_doc("bridge", None, BRIDGE_AS_TOKEN, True), "receive_ephemeral": True})
    )
    control = {**registration_doc("control", f"http://127.0.0.1:{ports['control']}", "as-c", False)}
    (home / "control.yaml").write_text(yaml.safe_dump({**control, "receive_ephemeral": True}))
    _firehose(home / "firehose.yaml", "firehose", ports["ingest_a"])
    _firehose(home / "firehose-full.yaml", "firehose-full", ports["ingest_b"])
    synapse = Synapse(
        home / "synapse",
        [home / "bridge.yaml", home / "control.yaml", home / "firehose.yaml", home / "firehose-full.yaml"],
        modules=[
            {
                "module": "appservice_streams_synapse.FeedModule",
                "config": {"bootstrap_servers": kafka.bootstrap, "topic": topic_a},
            }
        ],
    )
    ingests = [
        IngestProcess(
            home / "firehose.yaml",
            topic_a,
            home / "ingest-a.log",
            port=ports["ingest_a"],
            extra_args=["--without-room-events"],
        ),
        IngestProcess(home / "firehose-full.yaml", topic_b, home / "ingest-b.log", port=ports["ingest_b"]),
    ]
    synapse.configure()
    timings = {"synapse_start_s": synapse.start()}
    try:
        for name, app in apps.items():
            await app.start(ports[name])
        for worker in workers:
            worker.start()
        for ingest in ingests:
            ingest.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            alice = await register_user(http, synapse, "alice")
            bob = await register_appservice_user(http, synapse, BRIDGE_AS_TOKEN, "bridge_bob")
            yield Combined(synapse, apps["combined"], apps["full"], apps["control"], alice, bob, timings)
    finally:
        print(f"\nfeeds side by side: {timings}")
        for ingest in ingests:
            ingest.stop()
        synapse.stop()
        for worker in workers:
            worker.stop()
        for app in apps.values():
            await app.stop()
        delete_prefixed(kafka.bootstrap, (*(w.app_id for w in workers), topic_a, topic_b))


async def test_module_and_ephemeral_only_ingest_deliver_each_room_event_once_and_the_edus(combined: Combined) -> None:
    room_id = await combined.alice.create_room()
    await combined.alice.invite(room_id, combined.bob.user_id)
    await combined.bob.join(room_id)
    sent = [await combined.alice.send_text(room_id, f"message {n}") for n in range(10)]
    await combined.alice.typing(room_id)
    await combined.alice.read_receipt(room_id, sent[-1])

    def complete() -> bool:
        return (
            set(sent) <= set(ids(combined.combined))
            and set(sent) <= set(ids(combined.control))
            and bool(ephemeral(combined.combined, "m.typing"))
            and bool(ephemeral(combined.combined, "m.receipt"))
        )

    await combined.until(complete)
    await asyncio.sleep(1.0)  # a second copy would come now
    assert ids(combined.combined) == ids(combined.control), "each room event once, in Synapse's order"
    assert ephemeral(combined.combined, "m.typing")[-1]["content"]["user_ids"] == [combined.alice.user_id]
    assert sent[-1] in ephemeral(combined.combined, "m.receipt")[-1]["content"]


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return round(statistics.median(ordered), 1), round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 1)


async def test_latency_module_vs_ingest_vs_synapse_directly(combined: Combined) -> None:
    room_id = await combined.alice.create_room()
    await combined.alice.invite(room_id, combined.bob.user_id)
    await combined.bob.join(room_id)
    count, rate = 200, 20.0
    sent: list[tuple[str, float]] = []
    started = time.monotonic()
    for n in range(count):
        await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        sent.append((await combined.alice.send_text(room_id, f"latency {n}"), time.monotonic()))
    wanted = {e for e, _ in sent}
    await combined.until(
        lambda: all(wanted <= set(ids(a)) for a in (combined.combined, combined.full, combined.control))
    )
    for name, app in (("module", combined.combined), ("ingest", combined.full), ("synapse_direct", combined.control)):
        at = arrivals(app)
        p50, p99 = _percentiles([(at[e] - t) * 1000 for e, t in sent])
        combined.timings[f"{name}_p50_ms"], combined.timings[f"{name}_p99_ms"] = p50, p99
    print(f"\nlatency, {count} messages at {rate:.0f}/s, send response → appservice: {combined.timings}")
