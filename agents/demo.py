"""``appservice-streams demo``: the whole pipeline end to end on this machine.

Starts the local broker, a demo appservice on loopback that prints every
transaction it receives, and a real worker process; produces sample events
(some for the demo bridge's users, some for nobody, a member join that makes
a room interesting); waits until the appservice has them all; stops the worker.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

from agents.local_kafka import LocalKafka, LocalKafkaError
from agents.producer import EventProducer
from agents.topics import delete_prefixed, ensure_topic

SERVER_NAME = "demo.example.org"
HS_TOKEN = "demo-hs-token"  # a local demo's token, not a secret


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample_events(count: int, run: str) -> tuple[list[dict[str, Any]], int]:
    """``count`` events, and how many of them the demo bridge should get."""
    events: list[dict[str, Any]] = []
    expected = 0
    join_room = f"!lobby-{run}:{SERVER_NAME}"
    events.append(
        {
            "event_id": f"$join-{run}",
            "type": "m.room.member",
            "sender": f"@telegram_alice:{SERVER_NAME}",
            "state_key": f"@telegram_alice:{SERVER_NAME}",
            "room_id": join_room,
            "origin_server_ts": int(time.time() * 1000),
            "content": {"membership": "join"},
        }
    )
    expected += 1
    for n in range(1, count):
        sender = f"@telegram_bob:{SERVER_NAME}" if n % 3 else f"@carol:{SERVER_NAME}"
        room = join_room if n % 5 == 0 else f"!room{n % 4}-{run}:{SERVER_NAME}"
        # Rule 1 (sender in namespace) or rule 5 (a joined local member in namespace).
        if n % 3 or room == join_room:
            expected += 1
        events.append(
            {
                "event_id": f"$demo{n}-{run}",
                "type": "m.room.message",
                "sender": sender,
                "room_id": room,
                "origin_server_ts": int(time.time() * 1000),
                "content": {"msgtype": "m.text", "body": f"hello {n}"},
            }
        )
    return events, expected


def _start_worker(registrations: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "agents.cli", "worker", "--registrations", str(registrations)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def _run(home: Path, count: int) -> int:
    port = int(os.environ.get("APPSERVICE_STREAMS_KAFKA_PORT") or 9092)
    kafka = LocalKafka(root=home, port=port, controller_port=port + 1)
    print("1/5 starting the local Kafka broker (first run fetches its jars from Maven Central)…", flush=True)
    try:
        kafka.start()
    except LocalKafkaError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    run = time.strftime("%Y%m%d%H%M%S")
    demo_dir = home / ".data" / "demo"
    registrations = demo_dir / "registrations"
    registrations.mkdir(parents=True, exist_ok=True)
    port = _free_port()

    received: list[dict[str, Any]] = []
    txns: list[int] = []

    async def transaction(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {HS_TOKEN}":
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        body = orjson.loads(await request.read())
        events = body["events"]
        txns.append(len(events))
        received.extend(events)
        first = events[0]
        print(
            f"   appservice got txn {request.match_info['txn_id']}: {len(events):3d} events, "
            f"first {first['type']} from {first['sender']} in {first['room_id']}",
            flush=True,
        )
        return web.json_response({})

    app = web.Application()
    app.router.add_put("/_matrix/app/v1/transactions/{txn_id}", transaction)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"2/5 demo appservice listening on http://127.0.0.1:{port}", flush=True)

    (registrations / "telegram.yaml").write_text(
        yaml.safe_dump(
            {
                "id": "telegram",
                "url": f"http://127.0.0.1:{port}",
                "as_token": "demo-as-token",
                "hs_token": HS_TOKEN,
                "sender_localpart": "telegrambot",
                "namespaces": {
                    "users": [{"regex": f"@telegram_.*:{SERVER_NAME}", "exclusive": True}],
                    "aliases": [],
                    "rooms": [],
                },
            }
        )
    )
    # A fresh app id, input topic and state folder per run (removed after
    # it): a run never meets an earlier run's records or state.
    app_id = f"demo-{run}"
    topic = f"{app_id}.events"
    shutil.rmtree(demo_dir / "state", ignore_errors=True)
    ensure_topic(kafka.bootstrap, topic, 4)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "MATRIX_SERVER_NAME": SERVER_NAME,
        "APPSERVICE_STREAMS_APP_ID": app_id,
        "APPSERVICE_STREAMS_INPUT_TOPIC": topic,
        "APPSERVICE_STREAMS_INPUT_PARTITIONS": "4",
        "APPSERVICE_STREAMS_PARTITIONS": "4",
        "APPSERVICE_STREAMS_DATA_DIR": str(demo_dir / "state"),
        "APPSERVICE_STREAMS_INSTANCE_ID": "demo-worker",
        "APPSERVICE_STREAMS_START_FROM": "earliest",  # the run's own fresh topic, read whole
    }
    log_path = demo_dir / "worker.log"
    print(f"3/5 starting a worker (log: {log_path})", flush=True)
    worker = _start_worker(registrations, env, log_path)
    try:
        deadline = time.monotonic() + 120
        while "worker ready" not in log_path.read_text(errors="replace"):
            if worker.poll() is not None or time.monotonic() > deadline:
                print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
                print("demo: the worker did not start", file=sys.stderr)
                return 1
            await asyncio.sleep(0.2)
        events, expected = sample_events(count, run)
        print(f"4/5 producing {len(events)} events; {expected} concern the demo bridge", flush=True)
        producer = EventProducer(kafka.bootstrap, topic)
        started = time.monotonic()
        for event in events:
            producer.send_event(event)
        producer.flush()
        while len([e for e in received if e["event_id"].endswith(run)]) < expected:
            if time.monotonic() - started > 60:
                print(f"demo: only {len(received)} of {expected} events arrived", file=sys.stderr)
                return 1
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        print(
            f"5/5 done: {expected} events in {len(txns)} transactions "
            f"(sizes {txns[:6]}{'…' if len(txns) > 6 else ''}) in {elapsed:.2f} s",
            flush=True,
        )
        return 0
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
        await runner.cleanup()
        _delete_topics(kafka.bootstrap, app_id)
        shutil.rmtree(demo_dir / "state", ignore_errors=True)


def _delete_topics(bootstrap: str, app_id: str) -> None:
    """Delete the run's topics (input, inbox, delay, rooms, changelogs): best effort, a demo leaves no trace."""
    try:
        delete_prefixed(bootstrap, (app_id,))
    except Exception as exc:
        print(f"demo: could not delete the run's topics ({exc}); harmless", file=sys.stderr)


def run_demo(home: Path, events: int = 250) -> int:
    return asyncio.run(_run(home, max(2, events)))
