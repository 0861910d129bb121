"""The router's input commits: only offsets of partitions it still holds, never an old one after a revocation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from agents.router import ConsumerDied, Router
from streams.errors import KafkaRequestFailed
from streams.interest import Interest
from streams.rejoin import REJOIN_LIMIT
from streams.settings import Settings


class Consumer:
    """Records commits; ``assigned`` is what the group gave this router."""

    def __init__(self, assigned: list[int]) -> None:
        self.assigned = assigned
        self.commits: list[tuple[dict[int, int], bool]] = []

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("matrix.events", p) for p in self.assigned]

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append(({tp.partition: tp.offset for tp in offsets}, asynchronous))


def router(tmp_path: Path) -> Router:
    settings = Settings(server_name="example.org", registrations_dir=tmp_path, data_dir=tmp_path)
    return Router(settings, Interest([], settings.server_name), [], lambda *_: None)


def test_only_offsets_of_partitions_still_assigned_are_committed(tmp_path: Path) -> None:
    r = router(tmp_path)
    r._uncommitted.update({0: 10, 3: 7})
    consumer: Any = Consumer(assigned=[0])
    r._commit(consumer)
    assert consumer.commits == [({0: 10}, True)]


def test_a_revoked_partitions_offset_is_not_committed_after_it_comes_back(tmp_path: Path) -> None:
    r = router(tmp_path)
    r._uncommitted.update({2: 50})
    r._forget([TopicPartition("matrix.events", 2)])  # lost; another worker commits 80 meanwhile
    consumer: Any = Consumer(assigned=[2])  # and it comes back here
    r._commit(consumer)
    assert consumer.commits == [], "committing 50 now would rewind the group"


class FatalMessage:
    """What poll returns once librdkafka declared the consumer dead: code _FATAL, fatal flag unset."""

    def error(self) -> KafkaError:
        return KafkaError(KafkaError._FATAL, "Static consumer fenced by other consumer with same group.instance.id")


def test_a_fatal_consumer_error_is_not_skipped(tmp_path: Path) -> None:
    r = router(tmp_path)
    message: Any = FatalMessage()
    with pytest.raises(ConsumerDied, match=r"input consumer: .*fenced"):
        r._process([message], Consumer(assigned=[0]), None)  # type: ignore[arg-type]


class GroupConsumer(Consumer):
    """A subscribed consumer: each poll returns the next of ``polls`` (a fatal error, or None then stop)."""

    def __init__(self, r: Router, polls: list[str], assigned: list[int]) -> None:
        super().__init__(assigned)
        self._router, self._polls = r, polls
        self.closed = False

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        pass

    def poll(self, timeout: float) -> Any:
        what = self._polls.pop(0) if self._polls else "stop"
        if what == "fenced":
            return FatalMessage()
        self._router._stopping.set()  # "stop": the worker stops after this idle poll
        return None

    def consume(self, n: int, timeout: float) -> list[Any]:
        return []

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return []

    def close(self) -> None:
        self.closed = True


def run_loop(r: Router, monkeypatch: pytest.MonkeyPatch, lives: list[list[str]]) -> list[GroupConsumer]:
    """Run the router's loop with consumers whose polls are ``lives``, one list per consumer made."""
    made: list[GroupConsumer] = []

    def new_consumer(config: dict[str, Any]) -> GroupConsumer:
        made.append(GroupConsumer(r, lives[len(made)], assigned=[0]))
        return made[-1]

    monkeypatch.setattr("agents.router.Consumer", new_consumer)
    monkeypatch.setattr("agents.router.Producer", lambda config: None)
    r._loop()
    return made


def test_a_fenced_consumer_is_replaced_and_what_it_routed_is_left_uncommitted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = router(tmp_path)
    r._uncommitted[0] = r._routed_to[0] = 10  # routed by the consumer about to be fenced
    first, second = run_loop(r, monkeypatch, [["fenced"], ["stop"]])
    assert first.closed and first.commits == []
    assert second.closed and second.commits == [], "the new member must not commit the dead one's offsets"
    assert r._uncommitted == {} and r._routed_to == {}


def test_a_consumer_fenced_again_and_again_ends_the_worker_naming_the_instance_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(server_name="example.org", registrations_dir=tmp_path, data_dir=tmp_path, instance_id="w1")
    r = Router(settings, Interest([], settings.server_name), [], lambda *_: None)
    with pytest.raises(KafkaRequestFailed, match=r"4 times within 300 s.*APPSERVICE_STREAMS_INSTANCE_ID=w1"):
        run_loop(r, monkeypatch, [["fenced"] for _ in range(REJOIN_LIMIT + 1)])


class Record:
    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return b"{}"


def test_records_of_a_partition_revoked_after_they_were_polled_are_left_to_its_new_owner(tmp_path: Path) -> None:
    r = router(tmp_path)  # owns no input partition (all revoked)
    records: Any = [Record(2, 40), Record(2, 41)]
    r._process(records, Consumer(assigned=[]), None)  # type: ignore[arg-type]
    assert r._uncommitted == {}


def test_a_router_thread_that_ends_unasked_ends_the_worker(tmp_path: Path) -> None:
    settings = Settings(server_name="example.org", registrations_dir=tmp_path, data_dir=tmp_path)
    failures: list[str] = []
    r = Router(settings, Interest([], settings.server_name), [], lambda exc, where: failures.append(where))
    r._loop = lambda: None  # type: ignore[method-assign]
    r._run()
    assert failures == ["router"]
    r._stopping.set()
    r._run()
    assert failures == ["router"], "a stop that was asked for is no failure"


def test_a_streak_of_failed_commits_is_one_line_and_its_end_another(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With the broker down 20 s the router logged 90 "commit failed" lines, ten a second."""
    r = router(tmp_path)
    waiting = KafkaError(KafkaError._WAIT_COORD, "Local: Waiting for coordinator")
    with caplog.at_level("INFO", logger="agents.router"):
        for _ in range(90):
            r._on_commit(waiting, [])
        r._on_commit(None, [TopicPartition("matrix.events", 0, 5)])
        r._on_commit(waiting, [])
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3, lines
    assert "router commit failed" in lines[0] and "Waiting for coordinator" in lines[0]
    assert lines[1] == "router commits succeed again, after 90 failed"
    assert "router commit failed" in lines[2]
