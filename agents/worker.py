"""The worker's wiring: one Faust app, its topics and tables, and every agent, built from settings.

``create_pipeline(settings, registrations)`` builds everything without doing
I/O; Faust connects when the worker starts. Topics (all raw bytes)::

    matrix.events            input, key = room ID          → router (own thread and group, agents.router)
    <app>.rooms              the router's room state changelog (compacted)
    <app>.inbox              key = appservice ID           → deliverer
    <app>.delay              key = appservice ID           → delay agent
    <app>.dead-letter        records nobody could read, with the reason
    <app>-appservices-changelog                            Faust's table changelog

Table: ``appservices`` (state, stored txns and backlog chunks, co-partitioned
with the inbox).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import faust

from agents import delayer, deliverer, observe, router
from agents.appservice_http import AppserviceClient
from agents.changelog_producer import CHANGELOG_PRODUCER, ChangelogProducer
from agents.consumer_loop import consume_on_main_loop
from agents.fatal import fatal
from agents.http_api import HttpApi
from agents.kafka_config import confluent_producer_config, faust_options, make_producer_idempotent
from agents.metrics import Metrics
from agents.pipeline import Pipeline
from agents.positions import AckFilter
from agents.senders import resume_all
from streams.interest import Interest
from streams.registration import Registration
from streams.settings import Settings

log = logging.getLogger(__name__)

# Sized for a 2-core worker with a few dozen partitions: Faust's defaults give
# every partition's database a block cache meant for a server.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 8 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 8 * 1024 * 1024,
    "block_cache_compressed_size": 0,
    "max_open_files": 256,
}


def _broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in bootstrap.split(",") if server.strip()]


def _bound_fetch_wait(app: Any, wait_ms: int) -> None:
    """Give the worker's consumer our ``fetch_max_wait_ms`` instead of Faust's hard-coded 1,500 ms.

    aiokafka keeps one fetch in flight per broker and leaves partitions with
    buffered records out of it; a record arriving on such a partition (a
    routed item, a retry timer) waits until that fetch returns, which with
    nothing else arriving is the full wait. Figures: docs/decisions/fetch-wait.md.
    Private hooks: tests/integration/test_faust_hooks.py checks the effect.
    """
    thread = app.consumer._thread
    create = thread._create_worker_consumer

    def create_worker_consumer(transport: Any) -> Any:
        consumer = create(transport)
        consumer._fetch_max_wait_ms = wait_ms  # read by AIOKafkaConsumer.start()
        return consumer

    thread._create_worker_consumer = create_worker_consumer


def create_pipeline(
    settings: Settings, registrations: tuple[Registration, ...], http_listener: socket.socket | None = None
) -> Pipeline:
    app = faust.App(
        settings.app_id,
        broker=_broker_urls(settings.bootstrap_servers),
        store="rocksdb://",
        datadir=str(settings.state_dir),
        autodiscover=False,
        web_enabled=False,
        topic_partitions=settings.partitions,
        # Resolved from the cluster by agents.topics before the pipeline is built.
        topic_replication_factor=settings.replication.factor or 1,
        # agents.topics created every topic Faust reads or writes (its leader topic and the
        # table changelog too) before the app starts. Faust's own declaration asks aiokafka's
        # "controller" node first: a worker started while that node was down crashed with
        # NodeNotReadyError in LeaderAssignor.on_start, and mode's Worker exited 1.
        topic_allow_declare=False,
        broker_commit_interval=settings.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        **faust_options(settings),  # TLS/SASL credentials, acks=all
        producer_linger_ms=0,
        # aiokafka sends one batch per partition per request, and one request
        # at a time: at its 16 KB default a deliverer batch's stored txns
        # (~25 KB each) went out one round trip per record. (The changelog now
        # goes through agents.changelog_producer; Faust's producer still
        # carries retry timers, reported outcomes and resumes.)
        producer_max_batch_size=1024 * 1024,
        stream_buffer_maxsize=max(4096, settings.batch_max * 2),
        table_standby_replicas=0,
        consumer_group_instance_id=settings.instance_id,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 5),
    )
    # First: Faust builds its producer with its consumer (below), and the classes are read then.
    make_producer_idempotent(app)
    consume_on_main_loop(app)
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    inbox = app.topic(settings.inbox_topic, partitions=settings.partitions, internal=True, **raw)
    delay = app.topic(settings.delay_topic, partitions=settings.partitions, internal=True, **raw)
    dead_letter = app.topic(settings.dead_letter_topic, partitions=1, internal=True, **raw)
    table: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "options": ROCKSDB_OPTIONS}
    appservices = app.Table("appservices", partitions=settings.partitions, **table)
    _bound_fetch_wait(app, settings.fetch_max_wait_ms)
    pipeline = Pipeline(
        settings=settings,
        app=app,
        registrations={r.id: r for r in registrations},
        interest=Interest([r for r in registrations if r.url is not None], settings.server_name),
        inbox=inbox,
        delay=delay,
        dead_letter=dead_letter,
        appservices=appservices,
        client=AppserviceClient(
            connect_timeout_s=settings.connect_timeout_s,
            response_timeout_s=settings.response_timeout_s,
            legacy_authorization=settings.legacy_authorization,
            ca_file=settings.appservice_ca_file,
        ),
        acks=AckFilter(app),
        changelog=ChangelogProducer(confluent_producer_config(settings, **CHANGELOG_PRODUCER), fatal),
        metrics=Metrics(r.id for r in registrations if r.url is not None),
    )
    routing = router.install(settings, pipeline.interest, list(pipeline.registrations), pipeline.metrics)
    pipeline.metrics_server = observe.install(pipeline, routing)
    senders = deliverer.install(pipeline)
    delayer.install(pipeline)
    http_api = HttpApi(pipeline, http_listener)

    @app.task  # type: ignore[untyped-decorator]
    async def start_http_api() -> None:
        try:
            await http_api.start()
        except Exception as exc:
            fatal(exc, "HTTP API")

    @app.task  # type: ignore[untyped-decorator]
    async def start_router() -> None:
        # After Faust started: the inbox and dead-letter topics exist.
        routing.start()

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def resume_owned(sender: Any, **kwargs: Any) -> None:
        # Every worker asks every appservice to resume; the record lands with
        # the owner, whose machine resends what was in flight or re-arms its
        # retry timer (see Resume in streams.machine). Duplicates are harmless.
        pipeline.background.spawn(resume_all(pipeline), "resume appservices")
        owned = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == settings.inbox_topic)
        pipeline.background.spawn(announce_ready(owned), "announce ready")

    async def announce_ready(owned: list[int]) -> None:
        # Faust starts app tasks (the HTTP API among them) only after the
        # first rebalance, so "ready" waits for them here, not in the hook.
        await http_api.started.wait()
        await asyncio.to_thread(routing.started.wait)
        log.info("worker ready: owns inbox partitions %s, %d appservices", owned, len(pipeline.registrations))

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_io(sender: Any, **kwargs: Any) -> None:
        await asyncio.to_thread(routing.stop)
        await http_api.stop()
        await senders.stop()
        await pipeline.background.stop()
        await pipeline.client.stop()
        # Records still queued are delivered; a step written after this never
        # has its acknowledgement, so its inputs are not acked (replayed).
        await asyncio.to_thread(pipeline.changelog.close)

    return pipeline
