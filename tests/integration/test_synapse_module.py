"""End to end with a real Synapse: the feed module → Kafka → a worker → an appservice.

Synapse (``.venv-synapse``, with ``synapse_module/`` installed by ``make
synapse``) loads ``appservice_streams_synapse.FeedModule`` from
``modules:``; the real appservice's registration is given to Synapse with
``url: null`` and to the worker as is. Beside it Synapse delivers directly to
a *control* appservice with the same users namespace: the witness of what
Synapse itself sends (event IDs, order, and the serialised shape).

The module is added to a Synapse that already has a room with an appservice
user joined (the cold start): the ``room_members`` snapshot is what makes the
appservice interested in that room's next message (interest rule 5).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

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
from tests.support.recording_appservice import RecordingAppservice
from tests.support.worker_process import WorkerProcess, free_port

BRIDGE_AS_TOKEN = "as-bridge-module"
BATCH_SIZE = 20
ALIASES = f"#bridge_.*:{SERVER_NAME}"
# Synapse's serialisation fields that depend on the moment of serialising.
MOMENT_FIELDS = ("age",)


@dataclass
class Feed:
    home: Path
    synapse: Synapse
    worker: WorkerProcess
    bridge: RecordingAppservice  # behind the worker, fed by the module through Kafka
    control: RecordingAppservice  # fed by Synapse directly
    alice: Client
    bob: Client  # an appservice user (in the bridge's namespace)
    old_room: str  # made before the module was loaded
    timings: dict[str, float] = field(default_factory=dict)

    def bridge_events(self) -> list[dict[str, Any]]:
        return [e for r in self.bridge.requests for e in r.events]

    def bridge_ids(self) -> list[str]:
        return [e["event_id"] for e in self.bridge_events()]

    def control_events(self) -> dict[str, dict[str, Any]]:
        return {e["event_id"]: e for r in self.control.requests for e in r.events}

    async def until(self, condition: Any, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"timed out; synapse log:\n{self.synapse.log_tail()[-3000:]}"
            await asyncio.sleep(0.02)

    def backfill(self, *args: str) -> str:
        done = subprocess.run(
            [str(SYNAPSE_PYTHON), "-m", "appservice_streams_synapse", *args, "--config", str(self.synapse.config_path)],
            check=True,
            capture_output=True,
            text=True,
            cwd=self.synapse.home,
        )
        return done.stdout


@pytest.fixture(scope="module")
async def feed(kafka: LocalKafka, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Feed]:
    if not SYNAPSE_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{SYNAPSE_PYTHON} is missing: `make test` installs it (`make synapse`)")
        pytest.skip("Synapse is not installed: run `make synapse`")
    home = tmp_path_factory.mktemp("module")
    run = os.urandom(4).hex()
    topic = f"matrix.events.module-{run}"
    bridge, control = RecordingAppservice(), RecordingAppservice()
    bridge_port, control_port = free_port(), free_port()
    registrations = home / "registrations"
    registrations.mkdir()
    (registrations / "bridge.yaml").write_text(
        yaml.safe_dump(registration_doc("bridge", f"http://127.0.0.1:{bridge_port}", BRIDGE_AS_TOKEN, True, ALIASES))
    )
    (home / "bridge-synapse.yaml").write_text(
        yaml.safe_dump(registration_doc("bridge", None, BRIDGE_AS_TOKEN, True, ALIASES))
    )
    (home / "control.yaml").write_text(
        yaml.safe_dump(registration_doc("control", f"http://127.0.0.1:{control_port}", "as-control-module", False))
    )
    synapse = Synapse(home / "synapse", [home / "bridge-synapse.yaml", home / "control.yaml"])
    worker = WorkerProcess(
        registrations=registrations,
        app_id=f"module-{run}",
        input_topic=topic,
        data_dir=home / "worker-data",
        log_path=home / "worker.log",
        extra_env={"MATRIX_SERVER_NAME": SERVER_NAME},
    )
    synapse.configure()
    timings = {"synapse_start_s": synapse.start()}
    try:
        await bridge.start(bridge_port)
        await control.start(control_port)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            # Before the module: a room the appservice user has joined.
            alice = await register_user(http, synapse, "alice")
            bob = await register_appservice_user(http, synapse, BRIDGE_AS_TOKEN, "bridge_bob")
            old_room = await alice.create_room()
            await alice.invite(old_room, bob.user_id)
            await bob.join(old_room)
            synapse.stop()
            synapse.set_modules(
                [
                    {
                        "module": "appservice_streams_synapse.FeedModule",
                        "config": {
                            "bootstrap_servers": kafka.bootstrap,
                            "topic": topic,
                            "batch_size": BATCH_SIZE,
                            "poll_interval_s": 0.5,
                            "aliases_interval_s": 0.5,
                        },
                    }
                ]
            )
            worker.start()
            timings["synapse_restart_with_module_s"] = synapse.start()
            yield Feed(home, synapse, worker, bridge, control, alice, bob, old_room, timings)
    finally:
        print(f"\nsynapse module feed: {timings}")
        synapse.stop()
        worker.stop()
        await bridge.stop()
        await control.stop()
        delete_prefixed(kafka.bootstrap, (worker.app_id, topic))


async def test_cold_start_snapshot_makes_a_room_joined_before_the_module_interesting(feed: Feed) -> None:
    event_id = await feed.alice.send_text(feed.old_room, "after the module came")
    await feed.until(lambda: event_id in feed.bridge_ids() and event_id in feed.control_events())
    # Only the new message: the joins happened before the feed started and are not published again.
    assert feed.bridge_ids() == [event_id]
    assert "Traceback" not in feed.synapse.log_tail()


def _comparable(event: dict[str, Any]) -> dict[str, Any]:
    unsigned = {k: v for k, v in event.get("unsigned", {}).items() if k not in MOMENT_FIELDS}
    return {**{k: v for k, v in event.items() if k not in MOMENT_FIELDS}, "unsigned": unsigned}


async def test_events_arrive_in_order_in_the_shape_synapse_sends(feed: Feed) -> None:
    before = len(feed.bridge_ids())
    room_id = await feed.alice.create_room()
    await feed.alice.invite(room_id, feed.bob.user_id)
    await feed.bob.join(room_id)
    sent = [await feed.alice.send_text(room_id, f"message {n}") for n in range(30)]
    room = f"/_matrix/client/v3/rooms/{quote(room_id)}"
    for name in ("first name", "second name"):  # the second carries prev_content
        sent.append((await feed.alice.call("PUT", f"{room}/state/m.room.name/", {"name": name}))["event_id"])
    redaction = await feed.alice.call("PUT", f"{room}/redact/{quote(sent[0])}/r1", {"reason": "test"})
    sent.append(redaction["event_id"])
    await feed.until(lambda: set(sent) <= set(feed.bridge_ids()) and set(sent) <= set(feed.control_events()))
    await asyncio.sleep(0.5)
    control = feed.control_events()
    got = feed.bridge_events()[before:]
    # What Synapse sent the control for this room, in the same order, once each.
    expected = [e for e in control if control[e]["room_id"] == room_id]
    assert [e["event_id"] for e in got] == expected
    assert [e["event_id"] for e in got][-33:] == sent
    # the invite (stripped state), the join and the second name (prev_content), messages, the redaction
    for event in got:
        assert _comparable(event) == _comparable(control[event["event_id"]])
    assert got[-1]["redacts"] == sent[0] and got[-2]["unsigned"]["prev_content"] == {"name": "first name"}


async def test_synapse_killed_mid_stream_loses_nothing(feed: Feed) -> None:
    before = len(feed.bridge_ids())
    sent = [await feed.alice.send_text(feed.old_room, f"before kill {n}") for n in range(20)]
    feed.synapse.kill()  # right after the last response: the module has not published it all yet, or not stored
    feed.timings["synapse_restart_after_kill_s"] = feed.synapse.start()
    sent += [await feed.alice.send_text(feed.old_room, f"after kill {n}") for n in range(20)]
    await feed.until(lambda: set(sent) <= set(feed.bridge_ids()))
    await asyncio.sleep(1.0)  # a late duplicate would come now
    got = feed.bridge_ids()[before:]
    first_seen = list(dict.fromkeys(got))
    assert first_seen == sent, "nothing lost, in order"
    duplicates = len(got) - len(first_seen)
    feed.timings["duplicates_after_kill"] = duplicates
    # The documented window: at most one batch published again, itself in order.
    assert duplicates <= BATCH_SIZE
    if duplicates:
        again = [e for n, e in enumerate(got) if e in got[:n]]
        first = sent.index(again[0])
        assert again == sent[first : first + len(again)], "a run of consecutive events, in order"


async def test_backfill_publishes_again_from_an_event_once(feed: Feed) -> None:
    sent = [await feed.alice.send_text(feed.old_room, f"to backfill {n}") for n in range(10)]
    await feed.until(lambda: set(sent) <= set(feed.bridge_ids()))
    await asyncio.sleep(0.5)
    before = len(feed.bridge_ids())
    status = feed.backfill("status")
    assert "position" in status
    out = feed.backfill("backfill", "--since-event", sent[4])
    assert "->" in out
    await feed.until(lambda: feed.bridge_ids()[before:].count(sent[-1]) >= 1)
    await asyncio.sleep(1.5)
    again = feed.bridge_ids()[before:]
    assert again == sent[4:], "each event from the backfill position once more, in order, nothing else"


async def test_a_directory_alias_makes_its_room_interesting(feed: Feed) -> None:
    room_id = await feed.alice.create_room()
    before = await feed.alice.send_text(room_id, "before the alias")
    await feed.alice.call(
        "PUT", f"/_matrix/client/v3/directory/room/{quote(f'#bridge_room:{SERVER_NAME}')}", {"room_id": room_id}
    )
    await asyncio.sleep(1.5)  # the module reads room_aliases every aliases_interval_s (0.5 s here)
    after = await feed.alice.send_text(room_id, "after the alias")
    await feed.until(lambda: after in feed.bridge_ids())
    assert before not in feed.bridge_ids()


async def test_latency_from_send_response_to_appservice(feed: Feed) -> None:
    room_id = await feed.alice.create_room()
    await feed.alice.invite(room_id, feed.bob.user_id)
    await feed.bob.join(room_id)
    sent: list[tuple[str, float]] = []
    count, rate = 200, 20.0
    started = time.monotonic()
    for n in range(count):
        await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        event_id = await feed.alice.send_text(room_id, f"latency {n}")
        sent.append((event_id, time.monotonic()))
    await feed.until(lambda: {e for e, _ in sent} <= set(feed.bridge_ids()))
    arrival: dict[str, float] = {}
    for request in feed.bridge.requests:
        for event in request.events:
            arrival.setdefault(event["event_id"], request.at)
    latencies = sorted((arrival[e] - at) * 1000 for e, at in sent)
    feed.timings["latency_p50_ms"] = round(statistics.median(latencies), 1)
    feed.timings["latency_p99_ms"] = round(latencies[int(len(latencies) * 0.99) - 1], 1)
    feed.timings["latency_max_ms"] = round(latencies[-1], 1)
    control_at: dict[str, float] = {}
    for request in feed.control.requests:
        for event in request.events:
            control_at.setdefault(event["event_id"], request.at)
    direct = sorted((control_at[e] - at) * 1000 for e, at in sent if e in control_at)
    if direct:
        feed.timings["synapse_direct_p50_ms"] = round(statistics.median(direct), 1)
        feed.timings["synapse_direct_p99_ms"] = round(direct[int(len(direct) * 0.99) - 1], 1)
    print(f"\nmodule feed latency, {count} messages at {rate:.0f}/s: {feed.timings}")


@pytest.fixture(autouse=True)
def _no_module_errors(feed: Feed) -> Iterator[None]:
    yield
    log = feed.synapse.home / "homeserver.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    assert "appservice-streams feed: publishing failed" not in text
