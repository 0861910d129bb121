"""The load generator: ~1 KB Matrix events into the input topic on confluent-kafka, at a set rate or in bulk.

Every event carries ``content.ts_ns`` (``time.time_ns()`` taken just before
``produce``) and ``content.seq``, so a sink can compute produce-to-receive
latency and spot losses and duplicates. Records are keyed by room ID and
partitioned with ``murmur2_random``, like ``agents.producer.EventProducer``,
so rooms land where the worker's router expects them.

Appservice ``name`` owns the users ``@name_*:example.org`` (see
``bench.rig.write_registration``); an event sent "to" it has such a sender.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson
from confluent_kafka import KafkaException, Producer

from bench import pacing

SERVER_NAME = "example.org"
EVENT_BYTES = 1024
ROOMS_PER_APPSERVICE = 4


def sender_of(appservice: str, user: int = 0) -> str:
    return f"@{appservice}_u{user}:{SERVER_NAME}"


def room_of(appservice: str, room: int) -> str:
    return f"!{appservice}r{room}:{SERVER_NAME}"


_PAD = "x" * 2048


def event_envelope(appservice: str, seq: int, ts_ns: int, size: int = EVENT_BYTES) -> tuple[bytes, bytes]:
    """``(key, value)``: a version-1 input envelope of about ``size`` bytes for one ``m.room.message``."""
    room = room_of(appservice, seq % ROOMS_PER_APPSERVICE)
    event = {
        "event_id": f"$bench{seq}:{SERVER_NAME}",
        "type": "m.room.message",
        "sender": sender_of(appservice, seq % 8),
        "room_id": room,
        "origin_server_ts": ts_ns // 1_000_000,
        "content": {"msgtype": "m.text", "ts_ns": ts_ns, "seq": seq, "body": ""},
    }
    base = len(orjson.dumps({"v": 1, "kind": "event", "event": event}))
    event["content"]["body"] = _PAD[: max(0, size - base)]  # type: ignore[index]
    return room.encode(), orjson.dumps({"v": 1, "kind": "event", "event": event})


@dataclass
class LoadStats:
    produced: int = 0
    started_ns: int = 0
    finished_ns: int = 0
    errors: list[str] = field(default_factory=list)
    per_appservice: dict[str, int] = field(default_factory=dict)


class LoadGenerator:
    """One producer; ``seq`` numbers are unique per generator. Not thread-safe: one thread uses it at a time."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        linger_ms: float = 1.0,
        event_bytes: int = EVENT_BYTES,
        first_seq: int = 0,
        eager: bool = False,
    ) -> None:
        """``eager``: connect now and wait until the producer may send (see ``connect``)."""
        self.topic = topic
        self.event_bytes = event_bytes
        self.stats = LoadStats()
        self._seq = first_seq
        self._id_assigned = threading.Event()
        config: dict[str, object] = {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "linger.ms": linger_ms,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 1_048_576,
        }
        if eager:
            config |= {"statistics.interval.ms": 50, "stats_cb": self._on_stats}
        self._producer = Producer(config)
        if eager:
            self.connect()

    def _on_stats(self, stats: str) -> None:
        if '"idemp_state": "Assigned"' in stats or '"idemp_state":"Assigned"' in stats:
            self._id_assigned.set()

    def connect(self, timeout_s: float = 5.0) -> None:
        """Fetch the topic's metadata and wait for the idempotent producer's id (``eager`` only).

        A cold producer otherwise spends up to ~0.5 s on that in its first ``send``.
        """
        self._producer.list_topics(self.topic, timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while not self._id_assigned.is_set() and time.monotonic() < deadline:
            self._producer.poll(0.01)

    def _delivered(self, err: object, msg: object) -> None:
        if err is not None:
            self.stats.errors.append(str(err))

    def send(self, appservice: str) -> int:
        """Queue one event for ``appservice``; return its seq."""
        seq = self._seq
        self._seq += 1
        key, value = event_envelope(appservice, seq, time.time_ns(), self.event_bytes)
        while True:
            try:
                self._producer.produce(self.topic, key=key, value=value, on_delivery=self._delivered)
                break
            except BufferError:
                self._producer.poll(0.01)
        self.stats.produced += 1
        self.stats.per_appservice[appservice] = self.stats.per_appservice.get(appservice, 0) + 1
        return seq

    def bulk(self, appservices: Sequence[str], count: int, progress: Callable[[int], None] | None = None) -> None:
        """Queue ``count`` events round-robin over ``appservices`` as fast as possible, then flush."""
        self.stats.started_ns = self.stats.started_ns or time.time_ns()
        for n in range(count):
            self.send(appservices[n % len(appservices)])
            if n % 2000 == 0:
                self._producer.poll(0)
                if progress is not None:
                    progress(n)
        self.flush()
        self.stats.finished_ns = time.time_ns()

    def paced(
        self,
        appservices: Sequence[str],
        rate_per_s: float,
        duration_s: float,
        stop: threading.Event | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Offer ``rate_per_s`` events/s round-robin over ``appservices`` for ``duration_s`` (open loop)."""
        total = max(1, int(rate_per_s * duration_s))
        start = time.monotonic()
        self.stats.started_ns = self.stats.started_ns or time.time_ns()
        sent = 0
        while sent < total and not (stop is not None and stop.is_set()):
            elapsed = time.monotonic() - start
            for _ in range(pacing.batch(rate_per_s, elapsed, sent, max_batch=1000, total=total)):
                self.send(appservices[sent % len(appservices)])
                sent += 1
            self._producer.poll(0)
            if progress is not None:
                progress(sent)
            time.sleep(pacing.sleep_for(rate_per_s, time.monotonic() - start, sent, max_sleep_s=0.001))
        self.flush()
        self.stats.finished_ns = time.time_ns()

    def flush(self, timeout_s: float = 60.0) -> None:
        """Raises: KafkaException when records are refused or not acknowledged in time."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise KafkaException(f"{remaining} records not acknowledged within {timeout_s} s")
        if self.stats.errors:
            raise KafkaException(f"{len(self.stats.errors)} records refused, first: {self.stats.errors[0]}")


class PacedThread:
    """``LoadGenerator.paced`` in a background thread, for loads that run while the bench does other things."""

    def __init__(self, generator: LoadGenerator, appservices: Sequence[str], rate_per_s: float, duration_s: float):
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.sent = 0
        self._thread = threading.Thread(
            target=self._run, args=(generator, appservices, rate_per_s, duration_s), daemon=True, name="load"
        )

    def _run(self, generator: LoadGenerator, appservices: Sequence[str], rate: float, duration: float) -> None:
        try:
            generator.paced(appservices, rate, duration, self.stop_event, progress=self._progress)
        except BaseException as exc:
            self.error = exc

    def _progress(self, sent: int) -> None:
        self.sent = sent

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float | None = None) -> None:
        self._thread.join(timeout_s)

    def stop(self) -> None:
        self.stop_event.set()
        self._thread.join(30)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()
