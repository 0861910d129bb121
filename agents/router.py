"""The router: ``matrix.events`` → items on each interested appservice's inbox partition.

It runs on its own thread with confluent-kafka, in its own consumer group
(``<app>-router``), not as a Faust agent: Faust's per-record path (fetcher,
conductor, stream, event) capped a worker's input rate before any work was
done (docs/decisions/router-outside-faust.md), and its
skip-and-ack behaviour during rebalances (see ``agents.positions``) does not
exist here. The Faust agents still own the inbox and the appservice tables.

Per batch (whatever is fetched, up to ``batch_max``):

1. ``streams.routing.route_batch`` decides, purely: items grouped by inbox
   partition and appservice, rooms changed, records nobody can read;
2. one record per inbox partition (``streams.records.encode_routed``, each
   item with its input record's timestamp, for the age gauge), the
   changed rooms to the compacted ``<app>.rooms`` changelog, records that
   cannot be delivered (malformed, or over ``MAX_INPUT_RECORD_BYTES``) to the
   dead-letter topic (``streams.dead_letter``);
3. ``flush``: every record acknowledged (``acks=all``), or the worker exits
   (code 70) without committing. If the broker refused records for good
   (``MSG_SIZE_TOO_LARGE`` and the like: a retry would fail again, so exiting
   would stop the partition on every restart), the batch is forwarded again
   one input record at a time, and the one whose records are refused is
   dead-lettered (reason ``refused``) instead;
4. the rooms into RocksDB (``agents.rooms_store``) with the changelog offsets;
5. the input offsets committed (at most once per ``commit_interval_s`` under
   load; at once when idle and before partitions are revoked).

A crash anywhere replays the batch: routed items carry their input position
and the deliverer drops those it already applied, and re-applying room
changes gives the same rooms. A consumer librdkafka declared dead (a static
member fenced, which a node kill can cause) is replaced in-process the same
way: its partitions and uncommitted offsets are dropped, and a new consumer
rejoins the group from the committed offsets (``streams.rejoin`` decides).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from agents.fatal import fatal
from agents.kafka_config import confluent_config, confluent_producer_config
from agents.metrics import Metrics
from agents.rooms_store import RoomsStore
from agents.thread_names import name_this_thread
from agents.topics import key_partition
from streams.dead_letter import Reason, dead_letter
from streams.errors import KafkaRequestFailed
from streams.interest import Interest
from streams.matrix import AppserviceID
from streams.records import encode_routed
from streams.rejoin import GiveUp, after_consumer_died
from streams.rooms import encode_room
from streams.routing import InputRecord, route_batch
from streams.settings import Settings

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often the loop looks at its stop flag when idle
FLUSH_TIMEOUT_S = 30.0


class Router:
    def __init__(
        self,
        settings: Settings,
        interest: Interest,
        appservices: list[AppserviceID],
        on_fatal: Callable[..., None],
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._interest = interest
        self._on_fatal = on_fatal
        self._metrics = metrics
        self._partitions = {a: key_partition(a.encode(), settings.partitions) for a in appservices}
        self.rooms = RoomsStore(settings.state_dir / "rooms", confluent_config(settings), settings.rooms_topic)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # input partition → offset committed asynchronously, not yet confirmed
        self._uncommitted: dict[int, int] = {}
        # input partition → the offset after the last record routed (or marker passed)
        self._routed_to: dict[int, int] = {}
        self._committed_at = 0.0  # time.monotonic() of the last commit
        # Commits failed since the last that succeeded: only the first of a streak is logged.
        self._failed_commits = 0
        self.started = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="router", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        """Ask the loop to finish its batch and leave; blocks until it did (or ``timeout_s``)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        name_this_thread("router")
        try:
            self._loop()
        except Exception as exc:
            self._on_fatal(exc, "router")
        finally:
            # Whatever ended the loop unasked (confluent-kafka's C code can even raise a
            # KafkaError, which is no Exception: seen from consumer.close()), the worker must
            # not run on without its router, delivering nothing.
            if not self._stopping.is_set():
                self._on_fatal(RuntimeError("the router thread ended unexpectedly"), "router")

    def _consumer_config(self) -> dict[str, Any]:
        s = self._settings
        config: dict[str, Any] = {
            **confluent_config(s),  # servers, TLS/SASL, logger
            "group.id": s.router_group,
            "enable.auto.commit": False,
            "auto.offset.reset": s.start_from,
            # Eager, not cooperative-sticky: a cooperative rebalance moves partitions
            # in two rounds (revoke, then assign), and with static membership a broker
            # restart between the rounds left the group's stored assignment without
            # them: the chaos check saw input partitions 0-3 owned by no worker for
            # good after a broker kill 1 s after a second worker joined (1,923 of
            # 2,919 events never routed). An eager round assigns every partition.
            "partition.assignment.strategy": "roundrobin",
            "fetch.wait.max.ms": s.fetch_max_wait_ms,
            "session.timeout.ms": int(s.session_timeout_s * 1000),
            "heartbeat.interval.ms": int(min(3.0, s.session_timeout_s / 5) * 1000),
            # librdkafka pre-fetches up to 64 MB by default; 32 MB kept its
            # throughput at less memory (docs/decisions/router-outside-faust.md).
            "queued.max.messages.kbytes": 32 * 1024,
            "on_commit": self._on_commit,
        }
        if s.instance_id:
            config["group.instance.id"] = f"{s.instance_id}-router"
        if self._metrics is not None:
            config["statistics.interval.ms"] = int(s.lag_interval_s * 1000)  # consumer lag for agents.metrics
            config["stats_cb"] = self._on_stats
        return config

    def _on_stats(self, raw: str) -> None:
        # Runs inside poll/consume, on the router thread.
        if self._metrics is not None:
            self._metrics.router_stats(
                self._settings.router_group, self._settings.input_topic, raw, self.rooms.partitions
            )

    def _owned_changed(self) -> None:
        if self._metrics is not None:
            s = self._settings
            self._metrics.set_assignment(s.router_group, s.input_topic, self.rooms.partitions)

    def _loop(self) -> None:
        s = self._settings
        producer = Producer(confluent_producer_config(s, **{"linger.ms": 1}))  # acks=all, idempotent
        consumer = self._subscribe()
        self.started.set()
        deaths: tuple[float, ...] = ()  # of consumers librdkafka declared dead, for streams.rejoin
        try:
            while not self._stopping.is_set():
                try:
                    first = consumer.poll(POLL_S)
                    if first is None:
                        self._past_markers(consumer)
                        self._commit(consumer)
                        continue
                    messages = [first, *consumer.consume(s.batch_max - 1, timeout=0)]
                    self._process(messages, consumer, producer)
                except ConsumerDied as exc:
                    decision = after_consumer_died(deaths, time.monotonic())
                    if isinstance(decision, GiveUp):
                        raise KafkaRequestFailed(
                            f"{exc}; {decision.deaths} times within {decision.window_s:.0f} s, more than a"
                            f" coordinator's failover explains: does another worker have"
                            f" APPSERVICE_STREAMS_INSTANCE_ID={s.instance_id}?"
                        ) from exc
                    deaths = decision.deaths
                    log.warning(
                        "%s: rejoining the group with a new consumer, from the committed offsets"
                        " (what is routed again is dropped by input position)",
                        exc,
                    )
                    self._discard(consumer)
                    consumer = self._subscribe()
        finally:
            self._commit(consumer, asynchronous=False)
            consumer.close()
            self.rooms.close()

    def _subscribe(self) -> Consumer:
        """A new input consumer, subscribed (it joins the group at its first poll)."""
        s = self._settings
        consumer = Consumer(self._consumer_config())

        def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self._pin_start(consumer, partitions)
            numbers = sorted(tp.partition for tp in partitions)
            self.rooms.assign(numbers)
            log.info("router owns input partitions %s (added %s)", self.rooms.partitions, numbers)
            self._owned_changed()

        def on_revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            # Between batches (callbacks run inside poll): every batch is
            # routed; its offsets are committed before the partitions go.
            self._commit(consumer, asynchronous=False)
            self._forget(partitions)

        def on_lost(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            # Another worker may own them already: nothing to commit.
            self._forget(partitions)

        # The worker created the input and <app>.rooms topics before starting (agents.topics).
        consumer.subscribe([s.input_topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
        return consumer

    def _discard(self, consumer: Consumer) -> None:
        """Close a dead consumer; its partitions and offsets are no longer ours (they may be another's already).

        Nothing of it is committed: what it routed since the last commit is
        routed again by the partition's next owner, and dropped by input position.
        """
        self._forget([TopicPartition(self._settings.input_topic, p) for p in self.rooms.partitions])
        self._uncommitted.clear()
        self._routed_to.clear()
        try:
            consumer.close()  # its callbacks find nothing left to commit
        except (KafkaException, RuntimeError) as exc:
            log.info("closing the dead input consumer: %s", exc)

    # ------------------------------------------------------------------ one batch

    def _process(self, messages: list[Message], consumer: Consumer, producer: Producer) -> None:
        s = self._settings
        records: list[InputRecord] = []
        last: dict[int, int] = {}
        owned = set(self.rooms.partitions)
        for message in messages:
            error = message.error()
            if error is not None:
                # A fatal error comes as code _FATAL without the fatal flag; the consumer is
                # then dead for good (a static member fenced: after a node kill, or the broker
                # down longer than the session). Skipping it ran on without routing anything.
                if error.fatal() or error.code() == KafkaError._FATAL:
                    raise ConsumerDied(f"input consumer: {error}")
                log.warning("input consumer: %s", error)
                continue
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None  # set on every record without error
            if partition not in owned:
                # Revoked after poll returned it (the revocation ran inside consume): its new
                # owner reads it again from the committed offset. Routing it here raised
                # InvariantBroken (no room store for the partition) during a rebalance.
                continue
            kind, timestamp = message.timestamp()
            arrived = timestamp if kind != TIMESTAMP_NOT_AVAILABLE and timestamp >= 0 else None
            records.append(InputRecord(partition, offset, message.value(), arrived))
            last[partition] = offset
        if not records:
            return
        try:
            self._forward(records, producer)
        except Refused as exc:
            # Some record of the batch can never be forwarded (a routed record
            # over the inbox's size limit, say). Exiting would replay the batch
            # and stop every partition on every restart; find it instead.
            # Records already taken by Kafka are produced again: the deliverer
            # drops items it already applied, by input position.
            log.warning(
                "router batch refused by the broker (%s): forwarding its %d records one by one", exc, len(records)
            )
            for record in records:
                try:
                    self._forward([record], producer)
                except Refused as refused:
                    self._dead_letter(record, Reason.REFUSED, str(refused), producer)
        for partition, offset in last.items():
            self._uncommitted[partition] = self._routed_to[partition] = offset + 1
        now = time.monotonic()
        if now - self._committed_at >= s.commit_interval_s:
            self._commit(consumer)

    def _forward(self, records: list[InputRecord], producer: Producer) -> None:
        """Route ``records``, write everything they become, wait until Kafka has it all, then store the rooms.

        Raises:
            Refused: the broker refused records for a reason a retry will not
                change (every other record was acknowledged).
            KafkaRequestFailed: anything else left unacknowledged (the worker
                exits without committing, and the batch is read again).
        """
        s = self._settings
        batch = route_batch(records, self.rooms.load, self._interest, s.server_name, self._partitions.__getitem__)
        acked = _Acknowledgements(s.rooms_topic)
        for inbox_partition, groups in batch.items.items():
            for routed in encode_routed(groups):
                acked.produce(
                    producer, s.inbox_topic, value=routed.value, headers=routed.headers, partition=inbox_partition
                )
        for (partition, room_id), room in batch.rooms.items():
            acked.produce(producer, s.rooms_topic, key=room_id.encode(), value=encode_room(room), partition=partition)
        for record, reason, detail in batch.rejected:
            self._produce_dead_letter(record, reason, detail, producer, acked)
        # Nothing is committed, and no room stored, before Kafka has all of it.
        acked.wait(producer)
        self.rooms.commit(batch.rooms, acked.changelog_offsets)

    def _dead_letter(self, record: InputRecord, reason: Reason, detail: str, producer: Producer) -> None:
        """Raises: KafkaRequestFailed when even the (truncated) dead letter is not acknowledged."""
        acked = _Acknowledgements(self._settings.rooms_topic)
        self._produce_dead_letter(record, reason, detail, producer, acked)
        try:
            acked.wait(producer)
        except Refused as exc:
            raise KafkaRequestFailed(f"the dead letter of {self._source(record)} was refused too: {exc}") from exc

    def _produce_dead_letter(
        self, record: InputRecord, reason: Reason, detail: str, producer: Producer, acked: _Acknowledgements
    ) -> None:
        s = self._settings
        log.warning("dead-lettered %s (%s): %s", self._source(record), reason, detail)
        if self._metrics is not None:
            self._metrics.dead_lettered(reason)
        letter = dead_letter(s.input_topic, record.partition, record.offset, record.value, reason, detail)
        acked.produce(producer, s.dead_letter_topic, value=letter.value, headers=letter.headers)

    def _source(self, record: InputRecord) -> str:
        return f"{self._settings.input_topic}[{record.partition}]@{record.offset}"

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        # Runs inside poll/consume, on the router thread.
        if error is not None:
            self._commit_failed(error)
            return
        if self._failed_commits:
            log.info("router commits succeed again, after %d failed", self._failed_commits)
            self._failed_commits = 0
        for tp in partitions:
            if tp.error is None and self._uncommitted.get(tp.partition) == tp.offset:
                del self._uncommitted[tp.partition]

    def _commit(self, consumer: Consumer, asynchronous: bool = True) -> None:
        """Commit the input offsets routed and not yet committed, of partitions still assigned.

        At most once per ``commit_interval_s`` under load, at once when idle
        or on revocation: a commit per batch was an OffsetCommit request per
        few events under load, on a broker that shares the worker's cores
        (docs/decisions/router-commit-interval.md).
        Nothing is lost by committing late (a replayed record's items are
        dropped as duplicates by the deliverer), but the group's lag would show
        records as pending. A failed commit is left in ``_uncommitted`` and
        made again when idle.
        """
        self._committed_at = time.monotonic()
        if not self._uncommitted:
            return
        assigned = {tp.partition for tp in consumer.assignment()}
        pending = {p: o for p, o in self._uncommitted.items() if p in assigned}
        self._uncommitted = pending
        if pending:
            topic = self._settings.input_topic
            offsets = [TopicPartition(topic, p, o) for p, o in pending.items()]
            try:
                # Two calls: the stubs type commit() by the literal value of ``asynchronous``.
                if asynchronous:
                    consumer.commit(offsets=offsets, asynchronous=True)
                else:
                    consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                self._commit_failed(exc)

    def _commit_failed(self, error: object) -> None:
        """Log the first failure of a streak; count the rest (the broker down 20 s: 90 lines → 1)."""
        self._failed_commits += 1
        if self._failed_commits == 1:
            log.info(
                "router commit failed (%s); committing again when idle, if still assigned"
                " (further failures are counted until one succeeds)",
                error,
            )

    def _pin_start(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit the end of each assigned partition the group never committed, under ``start_from: latest``.

        Without it, a worker that routed nothing before a crash would start
        again from the new end, and skip what was produced in between.
        """
        if self._settings.start_from != "latest" or not partitions:
            return
        fresh = [tp for tp in consumer.committed(partitions, timeout=FLUSH_TIMEOUT_S) if tp.offset < 0]
        for tp in fresh:
            _, high = consumer.get_watermark_offsets(tp, timeout=FLUSH_TIMEOUT_S)
            tp.offset = high
            log.info("input partition %d: no committed offset, starting from its end (%d)", tp.partition, high)
        if fresh:
            consumer.commit(offsets=fresh, asynchronous=False)

    def _past_markers(self, consumer: Consumer) -> None:
        """When idle, take the consumer's position past what it skipped since the last record routed.

        A transactional producer (``appservice-streams ingest``) ends each
        transaction with a commit marker, an offset no consumer returns:
        committing the last record's offset + 1 would leave the group's lag
        at 1 per partition forever. Idle, nothing is returned but unread, so
        the position is safe to commit.
        """
        for tp in consumer.position(consumer.assignment()):
            if tp.offset > self._routed_to.get(tp.partition, tp.offset):
                self._uncommitted[tp.partition] = self._routed_to[tp.partition] = tp.offset

    def _forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions revoked or lost: their rooms closed, their offsets no longer ours to commit.

        An offset left behind could be committed after the partition came back
        from another worker that had moved on, rewinding the group.
        """
        for tp in partitions:
            self._uncommitted.pop(tp.partition, None)
            self._routed_to.pop(tp.partition, None)
        self.rooms.revoke(tp.partition for tp in partitions)
        self._owned_changed()


# Errors of a produce that a retry will never change: the record itself is
# what the broker (or the client, before sending) refuses.
_PERMANENT = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_TIMESTAMP,
    }
)


class ConsumerDied(Exception):
    """librdkafka declared the input consumer dead (a fatal error); it must be replaced."""


class Refused(Exception):
    """Records of a batch were refused for good; every other record of it was acknowledged."""


class _Acknowledgements:
    """The records one ``_forward`` produced, and what Kafka answered for each."""

    def __init__(self, rooms_topic: str) -> None:
        self._rooms_topic = rooms_topic
        self.changelog_offsets: dict[int, int] = {}  # rooms changelog partition → last offset acknowledged
        self.refused: list[str] = []
        self.failed: list[str] = []

    def produce(self, producer: Producer, topic: str, **record: Any) -> None:
        try:
            producer.produce(topic, on_delivery=self._delivered, **record)
        except KafkaException as exc:  # refused before it was queued (over the client's message.max.bytes)
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            (self.refused if error is not None and error.code() in _PERMANENT else self.failed).append(
                f"{topic}: {exc}"
            )

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            where = f"{message.topic()}[{message.partition()}]: {error}"
            (self.refused if error.code() in _PERMANENT else self.failed).append(where)
        elif message.topic() == self._rooms_topic:
            partition, offset = message.partition(), message.offset()
            if partition is not None and offset is not None:
                self.changelog_offsets[partition] = max(offset, self.changelog_offsets.get(partition, -1))

    def wait(self, producer: Producer) -> None:
        """Flush; return once every record was acknowledged.

        Raises:
            Refused: some were refused for good, all others acknowledged.
            KafkaRequestFailed: some are unacknowledged or failed otherwise.
        """
        remaining = producer.flush(FLUSH_TIMEOUT_S)
        if remaining or self.failed:
            raise KafkaRequestFailed(
                f"router batch not acknowledged: {remaining} records pending after {FLUSH_TIMEOUT_S} s, "
                f"failed: {self.failed[:3]}, refused: {self.refused[:3]}"
            )
        if self.refused:
            raise Refused("; ".join(self.refused[:3]))


def install(settings: Settings, interest: Interest, appservices: list[AppserviceID], metrics: Metrics) -> Router:
    return Router(settings, interest, appservices, fatal, metrics)


__all__ = ["Router", "install"]
