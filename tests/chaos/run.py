"""The chaos check: a ledger of events through several workers while workers, brokers and appservices fail.

    python -m tests.chaos --duration 300 --workers 3 --appservices 4 --rate 100
    python -m tests.chaos --brokers 3 --duration 180   # on the three-broker cluster

Runs against the local broker (``APPSERVICE_STREAMS_KAFKA_PORT``, default
9092; started if needed), or with ``--brokers 3`` against the local
three-broker KRaft cluster (``APPSERVICE_STREAMS_KAFKA_CLUSTER_PORT``, else
the single broker's port + 8), where every topic has 3 replicas and
``min.insync.replicas`` 2. For ``duration_s`` it produces events at ``rate``
per second to several appservices in several rooms (the ledger), while at
random moments (seeded) it:

* SIGKILLs a worker and restarts it 0.5-3 s later;
* SIGKILLs the broker (on the cluster: one node, drawn at random, never two
  at once) and starts it again 2-6 s later (``--no-broker-kills`` to skip);
* makes an appservice fail its next 1-5 transactions (500 or 503);
* makes an appservice hang (responses held) for 2-5 s.

Each kind of fault comes once before any comes twice. A supervisor loop
restarts any worker that exited on its own, as Docker or systemd would, and
counts it. Then every worker is left running until the
appservices have received the whole ledger (or ``drain_timeout_s``), and
``tests.chaos.ledger.verify`` counts what was lost, duplicated, reordered per
room, sent under a txn id below one already sent, or resent under a txn id
with another body. Bounded in count and time; 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from agents.local_cluster import LocalCluster
from agents.local_kafka import LocalKafka
from agents.logs import KAFKA_LOGGER as KAFKA_LOG
from agents.topics import ONE_REPLICA, delete_prefixed, ensure_topic
from streams.kafka_settings import TopicReplication
from tests.chaos.ledger import Ledger, Request, Verdict, verify
from tests.support.recording_appservice import RecordingAppservice
from tests.support.worker_process import WorkerProcess, write_registration

MAX_OVERRUN_S = 120.0  # how long load and faults may go on past the duration to inject every kind once
CLUSTER_REPLICATION = TopicReplication(3, 2)  # one node down and every write still lands on two

Brokers = LocalKafka | LocalCluster


@dataclass(frozen=True)
class ChaosConfig:
    duration_s: float = 60.0
    rate: float = 100.0  # events per second, all appservices together
    workers: int = 3
    appservices: int = 4
    rooms: int = 8
    broker_kills: bool = True
    seed: int = 1
    drain_timeout_s: float = 180.0
    fault_gap_s: tuple[float, float] = (2.0, 6.0)  # pause between two faults, drawn uniformly


@dataclass
class ChaosReport:
    config: ChaosConfig
    verdict: Verdict
    faults: dict[str, int]
    worker_exits: dict[str, int]  # exit code → times a worker exited on its own
    produce_failed: int  # records Kafka never acknowledged to the producer (not in the ledger)
    drained_in_s: float
    elapsed_s: float
    brokers: int = 1
    broker_kills_by_node: dict[str, int] = field(default_factory=dict)  # node id → SIGKILLs (cluster only)
    topic_replicas: dict[str, int] = field(default_factory=dict)  # replica count → the run's topics with it
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "clean": self.verdict.clean()}


class _Chaos:
    def __init__(self, config: ChaosConfig, kafka: Brokers, workdir: Path) -> None:
        self.config = config
        self.kafka = kafka
        self.workdir = workdir
        self.random = random.Random(config.seed)
        self.run_id = uuid.uuid4().hex[:8]
        self.app_id = f"chaos-{self.run_id}"
        self.topic = f"chaos-{self.run_id}.events"
        self.registrations = workdir / "registrations"
        self.appservices: dict[str, RecordingAppservice] = {}
        self.workers: list[WorkerProcess] = []
        self.ledger = Ledger()
        self.failed_ids: set[str] = set()
        self.faults: Counter[str] = Counter()
        self.node_kills: Counter[str] = Counter()
        self.exits: Counter[str] = Counter()
        self.broker_down = asyncio.Event()
        self.injecting_done = asyncio.Event()
        self.killed: set[int] = set()  # workers the chaos killed and will restart itself
        self.notes: list[str] = []

    # ------------------------------------------------------------------ set-up

    async def start(self) -> None:
        for n in range(self.config.appservices):
            appservice_id = f"as{n}"
            appservice = RecordingAppservice()
            await appservice.start()
            write_registration(self.registrations, appservice_id, appservice.url)
            self.appservices[appservice_id] = appservice
        replication = CLUSTER_REPLICATION if isinstance(self.kafka, LocalCluster) else ONE_REPLICA
        ensure_topic(self.kafka.bootstrap, self.topic, 8, replication=replication)
        for n in range(self.config.workers):
            worker = WorkerProcess(
                registrations=self.registrations,
                app_id=self.app_id,
                input_topic=self.topic,
                data_dir=self.workdir / f"worker{n}",
                log_path=self.workdir / f"worker{n}.log",
                instance=f"w{n}",
                extra_env={
                    "APPSERVICE_STREAMS_START_FROM": "earliest",
                    "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap,
                    "APPSERVICE_STREAMS_REPLICATION_FACTOR": str(replication.factor),
                    "APPSERVICE_STREAMS_MIN_INSYNC_REPLICAS": str(replication.min_insync_replicas),
                },
            )
            worker.start(wait=False)
            self.workers.append(worker)
        for worker in self.workers:
            await asyncio.to_thread(worker.wait_ready, 90.0)

    async def stop(self) -> None:
        for worker in self.workers:
            await asyncio.to_thread(worker.stop)
        for appservice in self.appservices.values():
            await appservice.stop()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(delete_prefixed, self.kafka.bootstrap, (self.app_id, self.topic))

    # ------------------------------------------------------------------ load

    async def produce(self, until: float) -> int:
        producer = Producer(
            {
                "bootstrap.servers": self.kafka.bootstrap,
                "logger": KAFKA_LOG,
                "partitioner": "murmur2_random",
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.timeout.ms": 300_000,
            }
        )

        def delivered(error: Any, message: Any) -> None:
            if error is not None:
                self.failed_ids.add(dict(message.headers())["event_id"].decode())

        n = 0
        started = time.monotonic()
        while time.monotonic() < until or not self.injecting_done.is_set():
            due = started + n / self.config.rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            appservice_id = f"as{self.random.randrange(self.config.appservices)}"
            room_id = f"!room{self.random.randrange(self.config.rooms)}:example.org"
            event_id = f"$chaos{n}:example.org"
            event = {
                "event_id": event_id,
                "type": "m.room.message",
                "sender": f"@{appservice_id}_user:example.org",
                "room_id": room_id,
                "origin_server_ts": 1_700_000_000_000 + n,
                "content": {"msgtype": "m.text", "body": f"chaos {n}"},
            }
            value = orjson.dumps({"v": 1, "kind": "event", "event": event})
            while True:
                try:
                    # Keyed by room (the envelope's rule); the event id rides in
                    # the headers so a failed delivery can be taken off the ledger.
                    producer.produce(
                        self.topic,
                        key=room_id.encode(),
                        value=value,
                        headers=[("event_id", event_id.encode())],
                        on_delivery=delivered,
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
                    await asyncio.sleep(0.01)
            self.ledger.add(appservice_id, room_id, event_id)
            producer.poll(0)
            n += 1
        remaining = await asyncio.to_thread(producer.flush, 300.0)
        if remaining:
            self.notes.append(f"{remaining} records still unacknowledged to the producer at the end")
        return n

    # ------------------------------------------------------------------ faults

    async def inject(self, until: float) -> None:
        """Faults at random moments until ``until``: each kind once first (in random order), then any."""
        actions = ["kill_worker", "kill_worker", "appservice_fails", "appservice_hangs"]
        if self.config.broker_kills:
            actions.append("kill_broker")
        first = sorted(set(actions), key=lambda _: self.random.random())
        try:
            # Past ``until`` only to inject each kind once (a broker restart on a
            # busy machine can take most of a short run), and never past the bound.
            while (time.monotonic() < until or first) and time.monotonic() < until + MAX_OVERRUN_S:
                await asyncio.sleep(self.random.uniform(*self.config.fault_gap_s))
                if time.monotonic() >= until and not first:
                    break
                action = first.pop() if first else self.random.choice(actions)
                self.faults[action] += 1
                if action == "kill_worker":
                    index = self.random.randrange(len(self.workers))
                    self.killed.add(index)
                    self.workers[index].kill()
                    await asyncio.sleep(self.random.uniform(0.5, 3.0))
                    self.workers[index].start(wait=False)
                    self.killed.discard(index)
                elif action == "kill_broker":
                    await self.kill_broker(self.random.uniform(2.0, 6.0))
                elif action == "appservice_fails":
                    appservice = self.random.choice(list(self.appservices.values()))
                    appservice.fail_next(self.random.randint(1, 5), self.random.choice([500, 503]))
                else:
                    appservice = self.random.choice(list(self.appservices.values()))
                    appservice.hold()
                    await asyncio.sleep(self.random.uniform(2.0, 5.0))
                    appservice.release()
        finally:
            self.injecting_done.set()

    async def kill_broker(self, down_s: float) -> None:
        """SIGKILL the broker (on a cluster: one node at random) and start it again ``down_s`` later."""
        self.broker_down.set()
        if isinstance(self.kafka, LocalCluster):
            index = self.random.randrange(self.kafka.brokers)
            await asyncio.to_thread(self.kafka.kill, index)
            self.node_kills[str(index + 1)] += 1
        else:
            pid = self.kafka.status().pid
            if pid is None:
                return
            os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.kafka.start, 120)  # starts what is not running
        self.broker_down.clear()

    async def supervise(self, stop: asyncio.Event) -> None:
        """Restart a worker that exited on its own, as Docker or systemd would."""
        while not stop.is_set():
            for index, worker in enumerate(self.workers):
                process = worker.process
                if index in self.killed or process is None or process.poll() is None:
                    continue
                self.exits[str(process.returncode)] += 1
                worker.start(wait=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    # ------------------------------------------------------------------ verdict

    def topic_replicas(self) -> dict[str, int]:
        """How many of the run's topics (the worker's, Faust's, the input) have each replica count."""
        admin = AdminClient({"bootstrap.servers": self.kafka.bootstrap, "logger": KAFKA_LOG})
        topics = admin.list_topics(timeout=30).topics
        counts: Counter[str] = Counter()
        for name, topic in topics.items():
            if name.startswith((self.app_id, self.topic)):
                counts[str(min(len(p.replicas) for p in topic.partitions.values()))] += 1
        return dict(counts)

    def received(self) -> dict[str, list[Request]]:
        return {
            appservice_id: [Request(int(r.txn_id), r.body) for r in appservice.requests]
            for appservice_id, appservice in self.appservices.items()
        }

    def delivered_count(self) -> int:
        ids: set[str] = set()
        for appservice in self.appservices.values():
            for request in list(appservice.requests):
                ids.update(e["event_id"] for e in orjson.loads(request.body).get("events", []))
        return len(ids)

    async def drain(self, expected: int) -> float:
        started = time.monotonic()
        while time.monotonic() - started < self.config.drain_timeout_s:
            if self.delivered_count() >= expected:
                break
            await asyncio.sleep(0.5)
        return time.monotonic() - started


async def run_chaos(config: ChaosConfig, kafka: Brokers, workdir: Path) -> ChaosReport:
    """Run one chaos check; the report's verdict says what was lost, reordered or resent wrongly."""
    started = time.monotonic()
    chaos = _Chaos(config, kafka, workdir)
    stop_supervising = asyncio.Event()
    try:
        await chaos.start()
        supervisor = asyncio.create_task(chaos.supervise(stop_supervising))
        until = time.monotonic() + config.duration_s
        produced, _ = await asyncio.gather(chaos.produce(until), chaos.inject(until))
        await asyncio.to_thread(chaos.kafka.start, 120)  # idempotent: whatever a fault left down
        for appservice in chaos.appservices.values():
            appservice.release()
        for worker in chaos.workers:  # every worker runs for the drain
            if worker.process is None or worker.process.poll() is not None:
                worker.start(wait=False)
        for event_id in chaos.failed_ids:
            chaos.notes.append(f"producer never got {event_id} acknowledged")
        for rooms in chaos.ledger.produced.values():
            for room_id, ids in rooms.items():
                rooms[room_id] = [e for e in ids if e not in chaos.failed_ids]
        drained_in = await chaos.drain(chaos.ledger.count())
        stop_supervising.set()
        await supervisor
        verdict = verify(chaos.ledger, chaos.received())
        if produced != chaos.ledger.count() + len(chaos.failed_ids):
            chaos.notes.append(f"{produced} produced, {chaos.ledger.count()} in the ledger")
        return ChaosReport(
            config=config,
            verdict=verdict,
            faults=dict(chaos.faults),
            worker_exits=dict(chaos.exits),
            produce_failed=len(chaos.failed_ids),
            drained_in_s=round(drained_in, 2),
            elapsed_s=round(time.monotonic() - started, 1),
            brokers=kafka.brokers if isinstance(kafka, LocalCluster) else 1,
            broker_kills_by_node=dict(chaos.node_kills),
            topic_replicas=await asyncio.to_thread(chaos.topic_replicas),
            notes=chaos.notes,
        )
    finally:
        stop_supervising.set()
        await chaos.stop()
