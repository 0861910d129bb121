"""The Faust/aiokafka hooks that need a real broker, checked by their effect.

The others, and the full list of hooks and why each exists, are in
``tests/unit/test_faust_hooks.py``. Here:

* ``agents.worker._bound_fetch_wait``: the aiokafka consumer Faust's consumer
  thread starts must fetch with our ``fetch_max_wait_ms`` (10 ms), not
  Faust's hard-coded 1,500 ms (a record landing on a partition left out of
  the fetch in flight waits for that fetch to end). Checked on the fetcher of
  a started consumer: the value aiokafka puts in its fetch requests.
* ``agents.kafka_config.make_producer_idempotent``: the producer Faust
  starts is idempotent (its aiokafka producer has a transaction manager, which
  numbers every record it sends).
* ``Consumer._committed_offset``, read by ``agents.observe`` for the Faust
  group's lag: once the worker committed what it delivered, the inbox lag it
  exports must reach 0 (were the mapping no longer kept, the lag would stay at
  the partition's end offset, or be missing).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agents.local_kafka import LocalKafka
from agents.producer import EventProducer
from agents.topics import delete_prefixed, ensure_worker_topics, key_partition
from agents.worker import create_pipeline
from streams.settings import Settings
from tests.integration.events import message
from tests.integration.test_metrics import Factory, scrape, value
from tests.support.worker_process import WorkerProcess, write_registration


async def test_the_consumer_faust_starts_fetches_with_our_wait(kafka: LocalKafka, tmp_path: Path, run_id: str) -> None:
    settings = Settings(
        server_name="hs",
        registrations_dir=tmp_path,
        bootstrap_servers=kafka.bootstrap,
        app_id=f"hooks-{run_id}",
        input_topic=f"matrix.events.{run_id}",
        partitions=1,
        input_partitions=1,
        data_dir=tmp_path / "data",
        http_port=0,
        metrics_port=0,
    )
    settings = await asyncio.to_thread(ensure_worker_topics, settings)
    pipeline = create_pipeline(settings, ())
    # What Faust's consumer thread does when it starts (ConsumerThread.on_start).
    consumer = pipeline.app.consumer._thread._create_consumer(loop=asyncio.get_running_loop())
    await consumer.start()
    try:
        assert settings.fetch_max_wait_ms == 10
        assert consumer._fetcher._fetch_max_wait_ms == settings.fetch_max_wait_ms, "Faust's 1,500 ms is back"
    finally:
        await consumer.stop()
        pipeline.changelog.close()
        await asyncio.to_thread(delete_prefixed, kafka.bootstrap, (settings.app_id, settings.input_topic))


async def test_the_producer_faust_starts_is_idempotent(kafka: LocalKafka, tmp_path: Path, run_id: str) -> None:
    settings = Settings(
        server_name="hs", registrations_dir=tmp_path, bootstrap_servers=kafka.bootstrap, app_id=f"hooks-{run_id}"
    )
    pipeline = create_pipeline(settings, ())
    producer = pipeline.app.producer
    await producer.start()
    try:
        started = producer._ensure_producer()  # the aiokafka producer Faust sends with
        assert started._txn_manager is not None, "Faust's producer runs without idempotence"
        assert started._sender._acks == -1
    finally:
        await producer.stop()
        pipeline.changelog.close()


async def test_the_faust_groups_lag_reaches_zero_once_committed(
    appservice_factory: Factory, registrations: Path, worker: WorkerProcess, producer: EventProducer
) -> None:
    bridge = appservice_factory()
    await bridge.start()
    write_registration(registrations, "bridge", bridge.url)
    worker.start()
    for n in range(5):
        producer.send_event(message(n))
    producer.flush()
    await bridge.wait_for_events(5, timeout_s=30)
    inbox, partition = f"{worker.app_id}.inbox", str(key_partition(b"bridge", 4))
    deadline = time.monotonic() + 20  # commits are at most commit_interval_s apart; lag is taken every 5 s
    lag = None
    while time.monotonic() < deadline:
        lag = value(await scrape(worker), "consumer_lag", group=worker.app_id, topic=inbox, partition=partition)
        if lag == 0:
            break
        await asyncio.sleep(0.5)
    assert lag == 0, f"inbox[{partition}] lag {lag}: Faust's committed offsets no longer reach agents.observe"
