"""``appservice-streams ingest``: a homeserver's appservice transactions → the input topic.

The homeserver sees one appservice (the "firehose", see ``streams.ingest``):
``PUT /_matrix/app/v1/transactions/{txnId}`` (and the legacy unprefixed
``/transactions/{txnId}``), ``POST /_matrix/app/v1/ping``. Per transaction,
one at a time in arrival order (an ``asyncio.Lock`` is FIFO):

1. the ``hs_token`` is checked (``Authorization: Bearer``, or the legacy
   ``?access_token=``), as bytes in constant time: 401 ``M_UNAUTHORIZED``
   when missing, 403 ``M_FORBIDDEN`` when wrong;
2. the body is read up to ``max_body_bytes`` (413 ``M_TOO_LARGE``), parsed
   (400 ``M_NOT_JSON``) and turned into records (400 ``M_BAD_JSON``);
3. a retry of the last transaction produced (same id, same body digest) is
   answered 200 at once; anything else is produced by a *transactional*
   confluent-kafka producer: its records on the input topic and the new
   position (id + digest) under the ingest's id on the compacted
   ``<topic>.ingest-positions``, in ONE Kafka transaction;
4. 200 ``{}`` only after ``commit_transaction`` returned. On any Kafka
   failure the transaction is aborted, the answer is 500 (the homeserver
   retries the same id and body) and the producer is dropped: the next
   transaction starts a new one, whose ``init_transactions`` settles what the
   old one left open, and the last position is read back (read_committed)
   before anything is decided. So a commit whose outcome was unknown is
   neither lost nor produced twice.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiohttp import web
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from agents.kafka_config import client_config, producer_config
from agents.topics import ensure_topics
from streams.errors import BadTransaction, KafkaRequestFailed, NotJSON
from streams.ingest import (
    Position,
    Produce,
    Record,
    Retry,
    decide,
    decode_position,
    encode_position,
    parse_body,
    records_of,
)
from streams.kafka_settings import PLAINTEXT, KafkaSecurity
from streams.matrix import PING_PATH, TRANSACTIONS_PATH
from streams.registration import Registration

log = logging.getLogger(__name__)

POSITIONS_SUFFIX = ".ingest-positions"
# The position topic is read whole at start: small segments let compaction keep it to about one record per ingest.
POSITIONS_CONFIG = {"cleanup.policy": "compact", "segment.bytes": str(1 << 20), "min.cleanable.dirty.ratio": "0.1"}


@dataclass(frozen=True)
class IngestConfig:
    registration: Registration  # the firehose's: its id names the ingest, its hs_token authenticates
    bootstrap_servers: str
    topic: str = "matrix.events"
    input_partitions: int = 8  # when the ingest creates the input topic
    host: str = "127.0.0.1"
    port: int = 8010
    max_body_bytes: int = 16 << 20  # Synapse's largest: 100 events of ≤ 64 KiB, plus ephemeral data
    kafka_timeout_s: float = 30.0  # per Kafka call; a homeserver waits 60 s for an answer
    security: KafkaSecurity = PLAINTEXT  # TLS/SASL, from the same KAFKA_* variables as the worker's
    room_events: bool = True  # False beside the Synapse feed module, which publishes them

    @property
    def ingest_id(self) -> str:
        return self.registration.id

    @property
    def positions_topic(self) -> str:
        return self.topic + POSITIONS_SUFFIX


class Sink(Protocol):
    last: Position | None

    def write(self, incoming: Position, records: list[Record]) -> Retry | Produce: ...


class KafkaSink:
    """Transactions of records on Kafka, and the last position. Blocking: call from one thread at a time."""

    def __init__(self, config: IngestConfig) -> None:
        self._config = config
        self._producer: Any = None
        self.last: Position | None = None

    def start(self) -> Any:
        """The producer, created with its transactions initialised and the last position read, if dropped.

        Raises:
            KafkaRequestFailed: the producer could not be made, or the broker
                did not answer within ``kafka_timeout_s`` (naming the servers).
        """
        if self._producer is None:
            try:
                self._producer = self._start()
            except KafkaException as exc:
                raise KafkaRequestFailed(f"Kafka at {self._config.bootstrap_servers}: {exc}") from exc
        return self._producer

    def _start(self) -> Any:
        """Raises: KafkaException (``start`` maps it)."""
        c = self._config
        producer = Producer(
            producer_config(  # acks=all, idempotent, TLS/SASL, the one Kafka logger
                c.bootstrap_servers,
                c.security,
                **{
                    "transactional.id": f"appservice-streams-ingest.{c.topic}.{c.ingest_id}",
                    "partitioner": "murmur2_random",  # as agents.producer: the hash Faust and the router expect
                    "linger.ms": 1,
                    "transaction.timeout.ms": 60_000,
                    "message.timeout.ms": int(c.kafka_timeout_s * 1000),
                },
            )
        )
        producer.init_transactions(c.kafka_timeout_s)  # fences an older instance, settles its open transaction
        self.last = self._read_position()
        return producer

    def _read_position(self) -> Position | None:
        """The last committed position under the ingest's id (read_committed), or None."""
        c = self._config
        consumer = Consumer(
            client_config(
                c.bootstrap_servers,
                c.security,
                **{
                    "group.id": f"appservice-streams-ingest.{c.ingest_id}",  # never joined nor committed: assign() only
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                },
            )
        )
        try:
            partition = TopicPartition(c.positions_topic, 0)
            _, end = consumer.get_watermark_offsets(partition, timeout=c.kafka_timeout_s)
            consumer.assign([TopicPartition(c.positions_topic, 0, OFFSET_BEGINNING)])
            last: Position | None = None
            deadline = time.monotonic() + c.kafka_timeout_s
            key = c.ingest_id.encode()
            while end > 0 and consumer.position([partition])[0].offset < end:
                if time.monotonic() > deadline:
                    raise KafkaException(f"{c.positions_topic} not read to its end ({end}) in {c.kafka_timeout_s} s")
                message = consumer.poll(0.5)
                if message is None:
                    continue
                error = message.error()
                if error is None and message.key() == key:
                    value = message.value()
                    last = None if value is None else decode_position(value)  # None: a tombstone
                elif error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
            return last
        finally:
            consumer.close()

    def write(self, incoming: Position, records: list[Record]) -> Retry | Produce:
        """Produce one homeserver transaction's records and its position (``incoming``) in one Kafka transaction.

        Returns ``Retry`` (nothing produced) when it is the last transaction again.

        Raises:
            KafkaRequestFailed: nothing of it was committed (or, if the commit's
                outcome is unknown, the next call reads it back first).
        """
        producer = self.start()
        decision = decide(self.last, incoming)
        if isinstance(decision, Retry):
            return decision
        c = self._config
        try:
            producer.begin_transaction()
            for key, value in records:
                self._produce(producer, c.topic, key, value)
            self._produce(producer, c.positions_topic, c.ingest_id.encode(), encode_position(incoming))
            producer.commit_transaction(c.kafka_timeout_s)
        except (KafkaException, BufferError) as exc:
            self._drop(producer)
            raise KafkaRequestFailed(f"transaction {incoming.txn_id} to {c.topic}: {exc}") from exc
        self.last = incoming
        return decision

    @staticmethod
    def _produce(producer: Any, topic: str, key: bytes, value: bytes) -> None:
        for _ in range(600):
            try:
                producer.produce(topic, key=key, value=value)
                return
            except BufferError:
                producer.poll(0.05)  # the local queue is full: let deliveries drain
        raise BufferError("the producer's queue stayed full for 30 s")

    def _drop(self, producer: Any) -> None:
        try:
            producer.abort_transaction(self._config.kafka_timeout_s)
        except KafkaException as exc:
            log.warning("ingest: abort_transaction failed (%s); a new producer will settle it", exc)
        self._producer = None
        self.last = None

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self._config.kafka_timeout_s)
            self._producer = None


def _error(status: int, errcode: str, error: str) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps({"errcode": errcode, "error": error}), content_type="application/json"
    )


OK = b"{}"


class Ingest:
    """The HTTP side: authentication, bounds, one transaction at a time."""

    def __init__(self, config: IngestConfig, sink: Sink) -> None:
        self._config = config
        self._sink = sink
        self._token = config.registration.hs_token.encode()
        self._lock = asyncio.Lock()  # FIFO: transactions are produced in arrival order
        self._writes: set[asyncio.Task[tuple[Position | None, Retry | Produce]]] = set()

    def _refused(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization")
        if header is not None and header.startswith("Bearer "):
            given: str | None = header[len("Bearer ") :]
        else:
            given = request.query.get("access_token")
        if given is None:
            return _error(401, "M_UNAUTHORIZED", "Missing access token")
        if not hmac.compare_digest(given.encode(), self._token):
            return _error(403, "M_FORBIDDEN", "Invalid access token")
        return None

    async def ping(self, request: web.Request) -> web.Response:
        return self._refused(request) or web.Response(body=OK, content_type="application/json")

    async def not_found(self, request: web.Request) -> web.Response:
        """User and alias queries: the firehose has no users or rooms of its own to create."""
        return self._refused(request) or _error(404, "M_NOT_FOUND", "Not provided by this appservice")

    async def transaction(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        txn_id = request.match_info["txn_id"]
        if request.content_length is not None and request.content_length > self._config.max_body_bytes:
            return _error(413, "M_TOO_LARGE", f"Body over {self._config.max_body_bytes} bytes")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "M_TOO_LARGE", f"Body over {self._config.max_body_bytes} bytes")
        try:
            body = parse_body(raw)
            ingested = records_of(body, room_events=self._config.room_events)
        except NotJSON as exc:
            log.warning("transaction %s refused: %s", txn_id, exc)
            return _error(400, "M_NOT_JSON", str(exc))
        except BadTransaction as exc:
            log.warning("transaction %s refused: %s", txn_id, exc)
            return _error(400, "M_BAD_JSON", str(exc))
        for reason in ingested.skipped:
            log.warning("transaction %s: skipped %s", txn_id, reason)
        # The write is a task of its own, holding the lock until Kafka answered: a homeserver that
        # hangs up (or a shutdown) cancels this handler, never a Kafka transaction halfway.
        incoming = Position.of(txn_id, raw, body)
        task = asyncio.get_running_loop().create_task(self._write_in_order(incoming, ingested.records))
        self._writes.add(task)
        task.add_done_callback(self._settled)
        try:
            last, decision = await asyncio.shield(task)
        except KafkaRequestFailed:
            return _error(500, "M_UNKNOWN", "Not stored; retry")  # logged by the write
        if isinstance(decision, Retry):
            log.info("transaction %s: a retry of the last one produced; nothing produced again", txn_id)
        elif decision.went_back:
            log.warning(
                "transaction %s: id not above the last one produced (%s) with another body: the homeserver's counter "
                "went back (Synapse on SQLite, synapse#14556); produced",
                txn_id,
                last.txn_id if last else None,
            )
        return web.Response(body=OK, content_type="application/json")

    async def _write_in_order(
        self, incoming: Position, records: list[Record]
    ) -> tuple[Position | None, Retry | Produce]:
        async with self._lock:
            last = self._sink.last
            try:
                return last, await asyncio.to_thread(self._sink.write, incoming, records)
            except KafkaRequestFailed as exc:
                log.error("transaction %s not produced, answering 500 so it is retried: %s", incoming.txn_id, exc)
                raise

    def _settled(self, task: asyncio.Task[Any]) -> None:
        self._writes.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved (and logged by the write) even when its handler is gone

    async def drain(self) -> None:
        """Wait for the writes under way (their handlers may be gone)."""
        await asyncio.gather(*self._writes, return_exceptions=True)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self._config.max_body_bytes)
        app.router.add_put(TRANSACTIONS_PATH.replace("txn_id", "txn_id:[^/]{1,255}"), self.transaction)
        app.router.add_put("/transactions/{txn_id:[^/]{1,255}}", self.transaction)  # legacy, unprefixed
        app.router.add_post(PING_PATH, self.ping)
        app.router.add_get("/_matrix/app/v1/users/{user_id}", self.not_found)
        app.router.add_get("/_matrix/app/v1/rooms/{alias}", self.not_found)
        return app


def ensure_ingest_topics(config: IngestConfig) -> None:
    """The input topic (``input_partitions``, unless it exists) and the compacted position topic (one partition).

    Raises:
        ConfigError: the broker refuses a topic.
        KafkaUnavailable: the broker cannot be reached.
    """
    ensure_topics(
        config.bootstrap_servers,
        [(config.topic, config.input_partitions, {}), (config.positions_topic, 1, POSITIONS_CONFIG)],
        config.kafka_timeout_s,
        security=config.security,
    )


async def serve(config: IngestConfig, listener: socket.socket) -> None:
    """Run the ingest on ``listener`` until SIGTERM or SIGINT.

    Raises:
        KafkaRequestFailed: the transactional producer could not be started or
            the last position read at start.
    """
    sink = KafkaSink(config)
    await asyncio.to_thread(sink.start)
    ingest = Ingest(config, sink)
    runner = web.AppRunner(ingest.app(), access_log=None)
    await runner.setup()
    await web.SockSite(runner, listener).start()
    last = sink.last.txn_id if sink.last else "none"
    log.info(
        "ingest ready on http://%s:%d: appservice %s → %s (last transaction %s)",
        config.host,
        config.port,
        config.ingest_id,
        config.topic,
        last,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()  # in-flight requests finish first
        await ingest.drain()
        await asyncio.to_thread(sink.close)
        log.info("ingest stopped")
