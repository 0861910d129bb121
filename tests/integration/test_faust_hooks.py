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
* ``agents.consumer_loop.consume_on_main_loop``: Faust's aiokafka consumer
  is served on the worker's event loop, with no thread of its own, and its
  stop leaves the loop's other tasks alone (mode's thread service cancels
  every task on its loop when it ends). Faust's ``Consumer.seek`` (the
  position guard's re-read) then reaches aiokafka on the loop aiokafka
  fetches on: aiokafka's ``seek`` deletes the partition's buffered records
  that ``Fetcher.fetched_records`` may be iterating, a ``KeyError`` that
  crashed a worker while aiokafka fetched on Faust's thread. Checked: the
  seek runs on the thread that fetches and the partition is read again from
  the offset sought; and seeks made while the consumer fetches never crash
  the fetch.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from confluent_kafka import Producer
from faust.types import TP
from mode.threads import WorkerThread

from agents.kafka_config import producer_config
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
    # What Faust's consumer service does when it starts (ConsumerThread.on_start).
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


@asynccontextmanager
async def faust_consumer_reading(
    kafka: LocalKafka, tmp_path: Path, run_id: str, records: int
) -> AsyncIterator[tuple[Any, list[TP]]]:
    """Faust's consumer (its consumer service and aiokafka consumer started, as a worker's are) assigned
    every inbox partition, each holding ``records`` records; the consumer and the partitions."""
    settings = Settings(
        server_name="hs",
        registrations_dir=tmp_path,
        bootstrap_servers=kafka.bootstrap,
        app_id=f"hooks-{run_id}",
        input_topic=f"matrix.events.{run_id}",
        input_partitions=1,
        data_dir=tmp_path / "data",
        http_port=0,
        metrics_port=0,
    )
    settings = await asyncio.to_thread(ensure_worker_topics, settings)
    producer = Producer(producer_config(kafka.bootstrap))
    for partition in range(settings.partitions):
        for n in range(records):
            producer.produce(settings.inbox_topic, b"x" * 100, key=b"k", partition=partition)
            if n % 1000 == 0:
                producer.poll(0)
    assert await asyncio.to_thread(producer.flush, 30) == 0
    pipeline = create_pipeline(settings, ())
    consumer = pipeline.app.consumer
    await consumer._thread.start()  # what starting Faust's consumer does: its service, aiokafka's consumer in it

    tps = [TP(settings.inbox_topic, partition) for partition in range(settings.partitions)]

    async def assign() -> None:  # the group's assignment, without the group
        consumer._thread._ensure_consumer().assign([TopicPartition(tp.topic, tp.partition) for tp in tps])

    await consumer._thread.call_thread(assign)
    try:
        yield consumer, tps
    finally:
        await consumer._thread.stop()
        pipeline.changelog.close()
        await asyncio.to_thread(delete_prefixed, kafka.bootstrap, (settings.app_id, settings.input_topic))


async def fetch(consumer: Any, tp: TP) -> list[int]:
    """The offsets of ``tp`` in Faust's next fetch that returns any (as Faust's fetch loop asks its service)."""
    for _ in range(100):
        records = await consumer._thread.getmany({tp}, timeout=0.1)
        if records.get(tp):
            return [record.offset for record in records[tp]]
    raise AssertionError(f"nothing fetched from {tp} in 10 s")


async def test_fausts_consumer_runs_on_the_workers_loop_and_its_stop_spares_the_loops_tasks(
    kafka: LocalKafka, tmp_path: Path, run_id: str
) -> None:
    bystander = asyncio.create_task(asyncio.sleep(3600))  # one of the worker's own tasks
    try:
        async with faust_consumer_reading(kafka, tmp_path, run_id, records=1) as (consumer, tps):
            aiokafka_consumer = consumer._thread._ensure_consumer()
            assert aiokafka_consumer._loop is asyncio.get_running_loop(), "aiokafka runs on a loop of its own"
            assert not [t for t in threading.enumerate() if isinstance(t, WorkerThread)], "Faust started its thread"
            assert (await fetch(consumer, tps[0])) == [0]
        assert not bystander.done(), "stopping Faust's consumer cancelled a task of the worker's loop"
    finally:
        bystander.cancel()


async def test_a_seek_reaches_aiokafka_on_the_thread_that_fetches(
    kafka: LocalKafka, tmp_path: Path, run_id: str
) -> None:
    async with faust_consumer_reading(kafka, tmp_path, run_id, records=20) as (consumer, tps):
        tp = tps[0]
        fetcher = consumer._thread._ensure_consumer()._fetcher
        fetched_records, seek_to = fetcher.fetched_records, fetcher.seek_to
        fetching_threads: set[threading.Thread] = set()
        seeking_threads: list[threading.Thread] = []

        async def fetched_records_seen(*args: Any, **kwargs: Any) -> Any:  # aiokafka's fetch, noting its thread
            fetching_threads.add(threading.current_thread())
            return await fetched_records(*args, **kwargs)

        def seek_to_seen(partition: Any, offset: int) -> None:  # aiokafka's own seek, noting the thread it runs on
            seeking_threads.append(threading.current_thread())
            seek_to(partition, offset)

        fetcher.fetched_records, fetcher.seek_to = fetched_records_seen, seek_to_seen
        assert (await fetch(consumer, tp))[0] == 0
        await consumer.seek(tp, 7)  # what the position guard calls
        assert len(fetching_threads) == 1
        assert seeking_threads == list(fetching_threads), "aiokafka sought from another thread than its fetch's"
        assert consumer._read_offset[tp] == 7, "Faust's fetch loop would drop the re-read as already read"
        assert (await fetch(consumer, tp))[0] == 7


SEEKS = 200  # with aiokafka on Faust's thread the fetch crashed within 21-33 seeks (4 runs of 4)


async def test_seeks_while_fausts_consumer_fetches_never_crash_the_fetch(
    kafka: LocalKafka, tmp_path: Path, run_id: str
) -> None:
    async with faust_consumer_reading(kafka, tmp_path, run_id, records=5_000) as (consumer, tps):
        for tp in tps:
            await fetch(consumer, tp)  # every partition has a position: seeks now land in the middle of fetches
        fetched = 0
        stop = asyncio.Event()

        async def fetching() -> None:
            nonlocal fetched
            while not stop.is_set():
                records = await consumer._thread.getmany(set(tps), timeout=0.01)  # aiokafka's KeyError comes out here
                fetched += sum(len(batch) for batch in records.values())

        switch = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)  # were aiokafka on a thread of its own, a race would show within a few seeks
        fetches = asyncio.create_task(fetching())
        try:
            for n in range(SEEKS):
                await consumer.seek(tps[n % len(tps)], n % 100)
                await asyncio.sleep(0.001)
                if fetches.done():
                    break
        finally:
            stop.set()
            sys.setswitchinterval(switch)
            await asyncio.wait_for(fetches, timeout=30)  # raises what the fetch raised
        assert fetched > SEEKS, "the fetch did not run beside the seeks"
