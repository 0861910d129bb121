"""Every hook the shell sets into Faust, mode or aiokafka, checked by its effect (no broker).

Each test builds the objects the worker builds (``agents.worker.create_pipeline``,
no I/O) and asserts what the library then *does*, so a Faust or aiokafka
upgrade that renames, moves or ignores a hook fails here instead of silently
bringing back what the hook corrects. The hooks:

* ``agents.positions.AckFilter`` replaces ``Consumer.ack``: Faust acks records
  it skipped (flow control paused during a rebalance, a stale generation) and
  records a stream let go of before their effects were durable; only
  ``processed`` may ack. Checked: a record Faust skipped is never committed
  past, through Faust's own stream iteration (its Cython iterator, installed
  here, and the pure-Python one). It also turns off Faust's gaps
  (``Consumer._add_gap``): Faust's fetch loop takes a read offset moved back
  under it (recovery's seek to the committed offset while it still hands over
  records fetched before) for offsets missing from the log and counts them as
  acked. Checked through that loop: nothing in such a "gap" is committed
  unprocessed, and processed records are committed at once (the "gap" doubled
  them in ``Consumer._acked``, and Faust's commit then moved one offset per
  commit interval). Its ``processed_through`` marks offsets in Faust's ack
  bookkeeping up to the deliverer's position: checked that replays Faust
  never hands on again are committed past, offsets past the position are
  not, and acks Faust forgot at a revocation are marked again.
* ``agents.batching.take_available`` drives a stream through
  ``Stream._enable_passive``, ``Stream._processors``, ``current_event`` and
  ``enable_acks = False``. The last one matters more than it looks: Faust's
  Cython iterator acks by writing ``Consumer._acked`` itself, not through
  ``Consumer.ack``, so the ack filter alone would not hold on that path.
  Checked with the same test: nothing is committable before ``processed``,
  and a batch is the events queued when it is taken.
* ``agents.kafka_config.make_producer_idempotent`` swaps the transport's
  ``Producer`` class: Faust turns aiokafka's idempotence on only inside
  transactions. Checked: the aiokafka producer Faust's producer builds has
  idempotence state and ``acks=-1``. (It had never taken effect: Faust's
  consumer, built first, creates the producer.)
* ``agents.table_store.partition_of`` sets ``faust.streams._current_event``,
  from which Faust's RocksDB store picks the partition of a write; ``TableStore``
  writes ``table.data`` directly (no changelog record from Faust) and calls
  ``set_persisted_offset`` as Faust's own changelog callback does. Checked: a
  write lands in the current partition's RocksDB, under ``app.conf.tabledir``
  (the folder ``agents.local_state`` deletes after an unclean stop), and the
  offset is the one Faust's recovery reads back.
* Names Faust derives and ``agents.topics`` creates first: the table's
  changelog topic and the leader assignor's topic; and Faust, told
  ``topic_allow_declare=False``, declares none of them itself.
* ``agents.ownership.Ownership`` reads ``app.rebalancing_count``: checked to
  move when Faust starts a rebalance.
* ``PositionGuard``'s seek (``Consumer.seek``) must also move Faust's read
  offset back, or Faust's fetch loop drops the re-read records as already read.
* ``agents.topics.key_partition`` must agree with the partitioner of the
  producer Faust builds (the router writes routed items to explicit partitions).

The fetch wait (``agents.worker._bound_fetch_wait``, Faust hard-codes 1,500 ms),
Faust's consumer served on the worker's loop (``agents.consumer_loop``)
and the lag metric's ``Consumer._committed_offset`` need a started consumer:
``tests/integration/test_faust_hooks.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import faust.streams
import pytest
from faust.assignor import LeaderAssignor
from faust.events import Event
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from agents.batching import take_available
from agents.ownership import Ownership
from agents.pipeline import Pipeline
from agents.table_store import TableStore, in_partition
from agents.topics import key_partition
from agents.worker import create_pipeline
from streams.settings import Settings


def settings(tmp_path: Path) -> Settings:
    # Port 9 (discard): nothing here connects; a client that tried would fail loudly.
    return Settings(
        server_name="hs",
        registrations_dir=tmp_path,
        bootstrap_servers="127.0.0.1:9",
        app_id="hooks-test",
        data_dir=tmp_path / "data",
        http_port=0,
        metrics_port=0,
    )


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    built = create_pipeline(settings(tmp_path), ())
    yield built
    built.changelog.close()


@pytest.fixture(params=["cython", "python"])
def stream_iterator(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Faust's stream iterator: its Cython one (used when built, as in this venv) or the pure-Python one."""
    if request.param == "cython":
        if faust.streams._CStreamIterator is None:
            pytest.skip("Faust's Cython extension is not built here")
    else:
        monkeypatch.setattr(faust.streams, "_CStreamIterator", None)
    return str(request.param)


def inbox_event(pipeline: Pipeline, offset: int, generation: int) -> Event:
    topic = pipeline.settings.inbox_topic
    message = ConsumerMessage(
        topic, 0, offset, 0.0, 0, [], b"as", b"v", None, 2, 1, tp=TP(topic, 0), generation_id=generation
    )
    return Event(pipeline.app, b"as", b"v", {}, message)


async def first_batch(pipeline: Pipeline, events: list[Event]) -> list[int]:
    """The offsets of the first batch ``take_available`` takes from a Faust stream fed ``events`` (as the deliverer)."""
    app = pipeline.app
    app.topics._acking_topics.add(pipeline.settings.inbox_topic)  # what subscribing the deliverer's topic does
    app.flow_control.resume()
    stream = app.stream(app.channel())
    await stream.maybe_start()  # as Faust's agent does before handing the stream over
    for event in events:
        await stream.channel.put(event)  # the stream's own iterator of the channel, as a topic delivers
    # ``within`` is only the safety net for a queue that never looks empty: at the worker's 0.05 s a loaded
    # machine cut this batch at [0, 1] once in a full CI run; here the batch must end where the queue does.
    batches = take_available(stream, 500, within=10.0)
    try:
        batch = await asyncio.wait_for(anext(batches), timeout=10)
        return [event.message.offset for event in batch]
    finally:
        await batches.aclose()  # the caller is done with the batch: take_available acks it Faust's way
        await stream.stop()


async def test_a_record_faust_skipped_is_never_committed_past(pipeline: Pipeline, stream_iterator: str) -> None:
    app, consumer = pipeline.app, pipeline.app.consumer
    tp = TP(pipeline.settings.inbox_topic, 0)
    current = app.consumer_generation_id
    stale = current + 1
    events = [inbox_event(pipeline, 0, current), inbox_event(pipeline, 1, stale), inbox_event(pipeline, 2, current)]
    assert await first_batch(pipeline, events) == [0, 2], "Faust skips a record of a stale generation"
    assert consumer._new_offset(tp) is None, "Faust's own acks (stream let go, skipped record) must not count"
    pipeline.acks.processed([events[0], events[2]])
    assert consumer._new_offset(tp) == 1, "processed records count; the commit stops before the skipped one"
    pipeline.acks.processed([events[1]])  # the position guard's re-read
    assert consumer._new_offset(tp) == 3


def processed(pipeline: Pipeline, *offsets: int) -> None:
    """The deliverer acks these records of inbox partition 0 (each reached it)."""
    pipeline.app.topics._acking_topics.add(pipeline.settings.inbox_topic)  # what subscribing the deliverer does
    generation = pipeline.app.consumer_generation_id
    pipeline.acks.processed([inbox_event(pipeline, offset, generation) for offset in offsets])


async def test_replays_faust_never_hands_on_again_are_committed_past_through_the_position(pipeline: Pipeline) -> None:
    consumer = pipeline.app.consumer
    tp = TP(pipeline.settings.inbox_topic, 0)
    consumer._committed_offset[tp] = 46  # recovery's seek after a rebalance; 46..56 were processed before it
    processed(pipeline, 46, 47, 48, 49, 50, 57)  # 51..56 never came back; 57 is new (the position is 57)
    pipeline.acks.processed_through(tp, 57)
    assert consumer._new_offset(tp) == 58


async def test_offsets_past_the_position_stay_unacked(pipeline: Pipeline) -> None:
    consumer = pipeline.app.consumer
    tp = TP(pipeline.settings.inbox_topic, 0)
    consumer._committed_offset[tp] = 46
    processed(pipeline, 46, 58)
    pipeline.acks.processed_through(tp, 56)
    assert consumer._new_offset(tp) == 57, "57 was never processed: the commit stops before it"


async def test_acks_faust_forgot_at_a_revocation_are_marked_again_from_the_committed_offset(pipeline: Pipeline) -> None:
    consumer = pipeline.app.consumer
    tp = TP(pipeline.settings.inbox_topic, 0)
    consumer._committed_offset[tp] = 46
    processed(pipeline, *range(46, 56))
    pipeline.acks.processed_through(tp, 55)
    # A revocation before the commit: Faust drops what it acked (``Consumer.on_partitions_revoked``), and
    # recovery's seek sets the committed offset again (``Consumer.perform_seek``).
    for bookkeeping in (consumer._acked, consumer._acked_index, consumer._committed_offset):
        bookkeeping.pop(tp)
    consumer._committed_offset[tp] = 46
    processed(pipeline, 56)  # 46..55 are not handed on again
    pipeline.acks.processed_through(tp, 56)
    assert consumer._new_offset(tp) == 57


async def test_with_nothing_committed_yet_the_position_fills_the_holes_between_acks(pipeline: Pipeline) -> None:
    consumer = pipeline.app.consumer
    tp = TP(pipeline.settings.inbox_topic, 0)
    processed(pipeline, 0, 1, 4)
    pipeline.acks.processed_through(tp, 4)
    assert consumer._new_offset(tp) == 5


class Fetcher:
    """What Faust's fetch loop (``Consumer._drain_messages``) asks of the fetcher that runs it."""

    def __init__(self) -> None:
        self._stopped = asyncio.Event()


async def drain(pipeline: Pipeline, fetched: list[list[int]], seek_back_to: int) -> list[Event]:
    """Run Faust's fetch loop over the fetches ``fetched`` (offsets of inbox partition 0); after the first,
    Faust's read offset is moved back to ``seek_back_to`` as recovery's ``perform_seek`` does (it seeks to
    the committed offset) while the loop goes on with the records it fetched before. The events handed on."""
    app, consumer = pipeline.app, pipeline.app.consumer
    app.topics._acking_topics.add(pipeline.settings.inbox_topic)
    tp = TP(pipeline.settings.inbox_topic, 0)
    fetcher = Fetcher()
    handed: list[Event] = []

    async def getmany(**kwargs: Any) -> Any:  # timeout=: no wait here
        for n, offsets in enumerate(fetched):
            if n == 1:
                consumer._read_offset[tp] = seek_back_to
            for offset in offsets:
                yield tp, inbox_event(pipeline, offset, app.consumer_generation_id).message
        fetcher._stopped.set()

    async def callback(message: Any) -> None:
        handed.append(Event(app, message.key, message.value, {}, message))

    consumer.getmany = getmany  # type: ignore[method-assign]
    consumer.callback = callback
    await asyncio.wait_for(consumer._drain_messages(fetcher), timeout=10)
    return handed


async def test_a_read_offset_moved_back_is_no_gap_to_commit(tmp_path: Path) -> None:
    pipeline = create_pipeline(settings(tmp_path), ())  # in this test's loop: Faust's fetch loop waits on its events
    try:
        consumer = pipeline.app.consumer
        tp = TP(pipeline.settings.inbox_topic, 0)
        consumer._committed_offset[tp] = 1
        # Records 1..41 handed on; recovery seeks back to the committed 1; the loop hands on 42..56, fetched
        # before the seek (41 offsets past the read offset: a "gap" to Faust), then drops the re-read 1..41.
        fetched = [list(range(1, 42)), list(range(42, 57)), list(range(1, 42))]
        handed = await drain(pipeline, fetched, seek_back_to=1)
        assert [event.message.offset for event in handed] == list(range(1, 57))
        pipeline.acks.processed([handed[0], handed[2]])
        assert consumer._new_offset(tp) == 2, "offset 2 was never processed: the commit stops before it"
        pipeline.acks.processed(handed)
        assert consumer._new_offset(tp) == 57, "every processed record is committable at once, not one per commit"
    finally:
        pipeline.changelog.close()


async def test_a_batch_is_what_was_queued_and_stays_unacked_until_processed(
    pipeline: Pipeline, stream_iterator: str
) -> None:
    consumer = pipeline.app.consumer
    tp = TP(pipeline.settings.inbox_topic, 0)
    current = pipeline.app.consumer_generation_id
    events = [inbox_event(pipeline, offset, current) for offset in range(5)]
    assert await first_batch(pipeline, events) == [0, 1, 2, 3, 4]
    assert not any(event.message.acked for event in events), "Faust acked records the agent still held"
    assert consumer._new_offset(tp) is None
    pipeline.acks.processed(events)
    assert consumer._new_offset(tp) == 5


async def test_faust_builds_an_idempotent_aiokafka_producer(pipeline: Pipeline) -> None:
    producer = pipeline.app.producer._new_producer()  # what Faust's producer starts
    try:
        assert producer._txn_manager is not None, "aiokafka's idempotence (producer id, sequence numbers) is off"
        assert producer._sender._acks == -1
    finally:
        await producer.stop()


async def test_key_partition_agrees_with_the_partitioner_of_fausts_producer(pipeline: Pipeline) -> None:
    producer = pipeline.app.producer._new_producer()
    try:
        partitions = list(range(pipeline.settings.partitions))
        for n in range(200):
            key = f"appservice-{n}".encode()
            assert key_partition(key, len(partitions)) == producer._partitioner(key, partitions, partitions)
    finally:
        await producer.stop()


class NoProducer:
    def produce(self, topic: str, records: Any) -> Any:
        raise AssertionError("not produced in this test")


def test_a_table_write_lands_in_the_current_partitions_rocksdb(pipeline: Pipeline) -> None:
    table = pipeline.appservices
    store = TableStore(table, NoProducer())  # type: ignore[arg-type]
    with in_partition(3):
        store.put(b"key", b"value")
    rocksdb = table.data
    assert rocksdb._db_for_partition(3)[b"key"] == b"value"
    assert rocksdb._db_for_partition(0).get(b"key") is None
    tabledir = Path(pipeline.app.conf.tabledir).resolve()
    assert tabledir in Path(rocksdb.partition_path(3)).resolve().parents, "agents.local_state deletes tabledir"
    assert store.get(b"key") == b"value"


def test_the_persisted_changelog_offset_is_what_recovery_reads(pipeline: Pipeline) -> None:
    table = pipeline.appservices
    tp = TP(table.changelog_topic.get_topic_name(), 3)
    with in_partition(3):
        table.data.set_persisted_offset(tp, 42)  # as TableStore.produce does once Kafka acknowledged
    assert table.data.persisted_offset(tp) == 42


def test_faust_names_the_topics_agents_topics_creates_for_it(pipeline: Pipeline) -> None:
    s = pipeline.settings
    assert pipeline.appservices.changelog_topic.get_topic_name() == s.appservices_changelog_topic
    assert LeaderAssignor(pipeline.app)._leader_topic_name == f"{s.app_id}-__assignor-__leader"


class RecordingProducer:
    def __init__(self) -> None:
        self.created: list[str] = []

    async def create_topic(self, topic: str, *args: Any, **kwargs: Any) -> None:
        self.created.append(topic)


async def test_faust_declares_none_of_the_topics_agents_topics_created(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A declaration asks aiokafka's "controller" node first: one started while that node was down
    # crashed the worker at start-up (NodeNotReadyError in LeaderAssignor.on_start, exit 1).
    producer = RecordingProducer()

    async def maybe_start_producer() -> RecordingProducer:
        return producer

    monkeypatch.setattr(pipeline.app, "maybe_start_producer", maybe_start_producer)
    await LeaderAssignor(pipeline.app)._enable_leader_topic()  # what LeaderAssignor.on_start does
    await pipeline.appservices.changelog_topic.maybe_declare()  # what the table's start does
    assert producer.created == [], "Faust creates topics itself again (topic_allow_declare)"


def test_a_rebalance_breaks_ownership(pipeline: Pipeline) -> None:
    ownership = Ownership(pipeline.app)
    ownership.assigned()
    epoch = ownership.epoch()
    assert ownership.unbroken(epoch)
    pipeline.app.on_rebalance_start()
    assert not ownership.unbroken(epoch), "Faust no longer counts rebalances in app.rebalancing_count"


async def test_a_seek_moves_fausts_read_offset_back(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = pipeline.app.consumer
    tp = TP(pipeline.settings.inbox_topic, 0)
    sought: list[tuple[TP, int]] = []

    async def seek_in_aiokafka(partition: TP, offset: int) -> None:
        sought.append((partition, offset))

    monkeypatch.setattr(consumer, "_seek", seek_in_aiokafka)
    consumer._read_offset[tp] = 10  # Faust read up to 10
    await consumer.seek(tp, 3)
    assert sought == [(tp, 3)]
    read = consumer._read_offset[tp]
    # Faust's fetch loop (Consumer._drain_messages) passes on a record only if offset >= the read offset.
    assert read is None or read <= 3, "a re-read record would be dropped as already read"


@pytest.fixture
async def consumer_service(tmp_path: Path) -> AsyncIterator[Any]:
    """Faust's consumer service of a pipeline built on the running loop (the app's loop must be the
    running one, which the ``pipeline`` fixture's is not); aiokafka cannot bootstrap from port 9."""
    built = create_pipeline(settings(tmp_path), ())
    yield built.app.consumer._thread
    built.changelog.close()


async def test_fausts_consumer_served_on_the_loop_reports_a_failed_start_and_stops_at_once(
    consumer_service: Any,
) -> None:
    # The start must raise, as from Faust's thread, and the stop must not wait out mode's 60 s shutdown timeout.
    with pytest.raises(Exception, match="Unable to bootstrap"):
        await asyncio.wait_for(consumer_service.start(), timeout=30)
    await asyncio.wait_for(consumer_service.stop(), timeout=10)
    assert consumer_service._serving is not None and consumer_service._serving.done()


async def test_a_failure_stopping_fausts_consumer_neither_hangs_its_stop_nor_goes_unlogged(
    consumer_service: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Raised where mode's thread service stops aiokafka, before it sets the shutdown a stop waits for: Faust's
    # thread set it as the thread died; served on the loop, the task's end must.
    async def on_thread_stop() -> None:
        raise RuntimeError("aiokafka would not stop")

    monkeypatch.setattr(consumer_service, "on_thread_stop", on_thread_stop)
    with pytest.raises(Exception, match="Unable to bootstrap"):
        await asyncio.wait_for(consumer_service.start(), timeout=30)
    await asyncio.wait_for(consumer_service.stop(), timeout=10)
    assert "aiokafka would not stop" in caplog.text
