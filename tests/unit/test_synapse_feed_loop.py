"""The feed module's loop against a fake ModuleApi: SQLite with Synapse's columns, a recording publisher.

What a crash between a batch's flush and its position write does, what a
Kafka failure does, and what a backfill does, step by step (the end-to-end
test cannot aim a SIGKILL at that window).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from appservice_streams_synapse import sql
from appservice_streams_synapse.core import Record, parse_config
from appservice_streams_synapse.kafka import PublishFailed
from appservice_streams_synapse.module import FeedModule
from tests.support.synapse_tables import insert, pdu, synapse_tables

FEED = "matrix.events"


class Store:
    def __init__(self) -> None:
        self.token = 0

    def get_room_max_stream_ordering(self) -> int:
        return self.token


class FakeApi:
    """The parts of ModuleApi the module uses; interactions run on one SQLite cursor."""

    worker_name = None

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self.cursor = cursor
        self._store = Store()
        self.fail_next: set[str] = set()  # interaction descs that raise once
        self.tasks: list[asyncio.Task[Any]] = []

    def register_third_party_rules_callbacks(self, on_new_event: Any) -> None:
        self.on_new_event = on_new_event

    def looping_background_call(self, *args: Any, **kwargs: Any) -> None:
        pass

    def delayed_background_call(self, *args: Any, **kwargs: Any) -> None:
        pass

    def run_as_background_process(self, desc: str, func: Any) -> None:
        self.tasks.append(asyncio.ensure_future(func()))

    async def run_db_interaction(self, desc: str, func: Any, *args: Any) -> Any:
        if desc in self.fail_next:
            self.fail_next.discard(desc)
            raise RuntimeError(f"crash in {desc}")
        return func(self.cursor, *args)

    async def defer_to_thread(self, func: Any, *args: Any) -> Any:
        return func(*args)


class Published:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.fail_next = False

    def publish(self, records: list[Record]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise PublishFailed("broker down")
        self.records.extend(records)

    def kinds(self) -> list[str]:
        out = []
        for _, value in self.records:
            doc = json.loads(value)
            out.append(doc["event"]["event_id"] if doc["kind"] == "event" else doc["kind"])
        return out


@pytest.fixture
def db() -> Iterator[sqlite3.Cursor]:
    with synapse_tables() as cursor:
        yield cursor


@pytest.fixture
def feed(db: sqlite3.Cursor) -> Iterator[tuple[FeedModule, FakeApi, Published]]:
    db.execute("INSERT INTO local_current_membership VALUES ('!r:hs', '@a:hs', '$j', 'join')")
    db.execute("INSERT INTO room_aliases VALUES ('#a:hs', '!r:hs', '@a:hs')")
    api = FakeApi(db)
    module = FeedModule(parse_config({"bootstrap_servers": "k", "batch_size": 3}), api)
    published = Published()
    module._publisher = published  # type: ignore[assignment]
    yield module, api, published


def events(api: FakeApi, first: int, last: int) -> None:
    for n in range(first, last + 1):
        insert(api.cursor, n, f"$e{n}", pdu())
    api._store.token = last


async def wake(module: FeedModule, api: FakeApi) -> None:
    module._retry_at = 0.0  # the test retries at once instead of after the backoff
    await api.on_new_event(object(), {})
    await asyncio.gather(*api.tasks)
    api.tasks.clear()


async def test_cold_start_snapshot_then_events_in_order_in_batches(feed: Any) -> None:
    module, api, published = feed
    api._store.token = 4  # events before the module came are not published
    await wake(module, api)
    assert published.kinds() == ["room_members", "room_aliases"]
    assert sql.read_position(api.cursor, FEED) == 4
    events(api, 5, 11)
    await wake(module, api)
    assert published.kinds()[2:] == [f"$e{n}" for n in range(5, 12)]
    assert sql.read_position(api.cursor, FEED) == 11


async def test_a_crash_after_the_flush_publishes_that_one_batch_again(feed: Any) -> None:
    module, api, published = feed
    await wake(module, api)
    events(api, 1, 7)
    api.fail_next.add("appservice_streams_feed_position")  # the first batch is flushed, its position not stored
    await wake(module, api)
    assert published.kinds()[2:] == ["$e1", "$e2", "$e3"]
    await wake(module, api)  # the restart's (or the retry's) read starts at the stored position
    assert published.kinds()[2:] == ["$e1", "$e2", "$e3", "$e1", "$e2", "$e3", "$e4", "$e5", "$e6", "$e7"]


async def test_a_kafka_failure_stores_nothing_and_the_retry_publishes_the_batch(feed: Any) -> None:
    module, api, published = feed
    await wake(module, api)
    events(api, 1, 2)
    published.fail_next = True
    await wake(module, api)
    assert sql.read_position(api.cursor, FEED) == 0 and published.kinds()[2:] == []
    await wake(module, api)
    assert published.kinds()[2:] == ["$e1", "$e2"] and sql.read_position(api.cursor, FEED) == 2


async def test_a_backfill_publishes_again_from_its_position(feed: Any) -> None:
    module, api, published = feed
    await wake(module, api)
    events(api, 1, 5)
    await wake(module, api)
    assert sql.set_position(api.cursor, FEED, 3) == 5  # what the CLI does
    await wake(module, api)
    assert published.kinds()[2:] == ["$e1", "$e2", "$e3", "$e4", "$e5", "$e4", "$e5"]


async def test_an_alias_change_is_published_after_a_canonical_alias_event(feed: Any) -> None:
    module, api, published = feed
    await wake(module, api)
    api.cursor.execute("INSERT INTO room_aliases VALUES ('#b:hs', '!r:hs', '@a:hs')")
    insert(api.cursor, 1, "$alias", pdu("m.room.canonical_alias", state_key="", content={"alias": "#b:hs"}))
    api._store.token = 1
    await wake(module, api)
    assert published.kinds() == ["room_members", "room_aliases", "$alias", "room_aliases"]
    assert json.loads(published.records[-1][1])["aliases"] == ["#a:hs", "#b:hs"]
