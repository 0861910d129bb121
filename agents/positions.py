"""In-order, gap-free consumption on top of Faust: ack filter and position guard.

Faust skips records that reach a stream while flow control is paused (a
rebalance, table recovery) or that carry a stale generation, and *acks them
anyway* (``Stream._py_aiter``: "we want to ack the filtered message otherwise
the lag would increase"; its Cython iterator, used when built, drops them
unacked but acks every other record by writing the consumer's ack lists
itself, past ``Consumer.ack``: hence ``enable_acks = False`` in
``agents.batching``). If a commit lands before Faust seeks back, those
records are committed without ever reaching an agent; if they come back
later, they come out of order, and the deliverer, which drops any item at or
below the last input offset it applied, would drop them. The benchmark lost
events this way when workers were killed while producers kept writing.

Two guards close that hole:

* ``AckFilter`` lets only records that an agent really processed be acked,
  so Faust never commits past a skipped record.
* ``PositionGuard`` stores the deliverer's last processed offset per inbox
  partition in its table, after the step's other effects are durable. (The
  router reads the input with confluent-kafka, which skips nothing.) With no
  stored position (state older than the guard) the group's committed offset
  is the baseline.
  Replays at or below it are dropped. A jump past ``last + 1`` is checked
  against the log with a side consumer; gaps that hold no records
  (transaction markers, compaction) are accepted. If records were skipped,
  the partition is sought back to the first of them and later records are
  held (not admitted, not acked) until the re-read arrives; the seek is
  made again after ``RESEEK_S`` (Faust's fetch loop can overwrite the read
  offset with records fetched before the seek). If the re-read has not come
  after ``REREAD_TIMEOUT_S``, ``GapDetected`` ends the worker without
  committing (exit code 70), and the supervisor's restart resumes from the
  committed offset, which the ack filter kept at or below the gap.

Faust also drops replays (records at or below the position, read again from
the committed offset after a rebalance), and an offset never acked would stop
the commit below it for good: the deliverer acks by position as well
(``AckFilter.processed_through``). A dropped record with no later one to
reveal the jump is left to ``streams.stalls``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from faust.types.tuples import ack_lock

from agents.kafka_config import client_config
from streams.backlog import KeyValueStore
from streams.errors import InvariantBroken, KafkaRequestFailed
from streams.kafka_settings import PLAINTEXT, KafkaSecurity

log = logging.getLogger(__name__)


# How long a partition sought back may go on delivering later (stale) records
# before the worker gives up and restarts instead.
REREAD_TIMEOUT_S = 30.0
# How long after a seek its records may take to come before it is made again.
RESEEK_S = 1.0


class GapDetected(InvariantBroken):
    """Records of a partition were skipped; processing on would lose them."""


class AckFilter:
    """Installed on the Faust consumer: only ``processed`` acks, Faust's own paths never do.

    Faust acks an event when a stream lets go of it (for a skipped record
    too). The agents instead call ``processed`` once an event's effects are
    durable, which may be after the stream let go of it (the deliverer
    acknowledges a batch while it processes the next).

    Faust's other path is its gaps (``Consumer._add_gap``): when its fetch
    loop hands on an offset more than one past its read offset, it takes the
    offsets between for missing from the log (compaction, transaction
    markers) and its commit counts them as acked. Its read offset also moves
    back under the loop: recovery's seek to the committed offset after a
    rebalance, while the loop still hands on records fetched before it. The
    records between were real (handed on once, or never: the re-read is then
    dropped as already read), so a commit could pass records never
    processed; and when they were processed, each stood twice in Faust's
    acked list, which its commit then passed one offset per commit interval
    (the Faust group's committed offset trailed for tens of seconds after a
    takeover). Our topics have no such holes (their producers are not
    transactional, none is compacted), so gaps are not recorded.

    The deliverer also acks by position (``processed_through``): records at
    or below its position guard's position were processed, by this worker or
    an earlier owner, whether or not Faust hands them on again.
    """

    def __init__(self, app: Any) -> None:
        consumer = app.consumer
        self._consumer = consumer
        self._ack = consumer.ack
        # tp → (Faust's acked list, offset): offsets up to there were marked in that list
        self._marked: dict[Any, tuple[list[int], int]] = {}

        def ack(message: Any) -> bool:
            return False  # Faust's path: a skipped or not yet durable record must stay uncommitted

        async def add_gap(tp: Any, offset_from: int, offset_to: int) -> None:
            return None  # not missing from the log: records this consumer read, or will read again

        consumer.ack = ack
        consumer._add_gap = add_gap

    def processed(self, events: list[Any]) -> None:
        for event in events:
            self._ack(event.message)

    def processed_through(self, tp: Any, last: int) -> None:
        """Count every offset of ``tp`` up to ``last`` processed, whether or not its record reached an agent.

        For the position guard's position, once the step that reached it is
        durable and its effects started. After a rebalance the partition is
        read again from the committed offset, and the records up to the
        position are replays (processed by an earlier owner, or by this
        worker before Faust forgot their acks at the revocation). Faust does
        not hand all of them on again: it drops records fetched before the
        seek, and some re-read ones under a read offset moved past them. An
        offset never acked stops the commit below it for good (Faust's
        commit takes the first run of consecutive acked offsets, and none
        when the run does not start at the committed offset), so the group's
        committed offset stayed up to 58 records behind while everything had
        been delivered, and consumer lag reported a stuck partition.

        Offsets are marked in Faust's own ack bookkeeping (``_acked``,
        ``_acked_index``, what ``Consumer.ack`` writes) from the committed
        offset on, or from where the last call left off while Faust still
        holds the list it marked: Faust drops the list at a revocation, with
        acks it never committed.
        """
        consumer = self._consumer
        committed = consumer._committed_offset.get(tp)
        acked: list[int] = consumer._acked[tp]
        marked = self._marked.get(tp)
        if committed is None:
            # Never committed, or between a revocation and recovery's seek: only fill holes between acks.
            if not acked:
                return
            start = min(acked)
        else:
            start = committed
        if marked is not None and marked[0] is acked:
            start = max(start, marked[1] + 1)
        if start > last:
            return
        with ack_lock:
            index = consumer._acked_index[tp]
            for offset in range(start, last + 1):
                if offset not in index:
                    index.add(offset)
                    acked.append(offset)
                    consumer._n_acked += 1
        if committed is not None:
            self._marked[tp] = (acked, last)


def records_between(
    bootstrap: str,
    topic: str,
    partition: int,
    start: int,
    end: int,
    timeout_s: float = 15.0,
    security: KafkaSecurity = PLAINTEXT,
) -> bool:
    """Whether the log holds any record with ``start <= offset < end`` (blocking).

    Raises:
        KafkaRequestFailed: the partition could not be read from ``start`` within ``timeout_s``.
    """
    consumer = Consumer(
        client_config(
            bootstrap,
            security,
            **{"group.id": "appservice-streams-gap-check", "enable.auto.commit": False, "enable.partition.eof": True},
        )
    )
    try:
        return _records_between(consumer, topic, partition, start, end, timeout_s)
    except KafkaException as exc:
        raise KafkaRequestFailed(f"{topic}[{partition}]: offsets {start}..{end - 1} not checked: {exc}") from exc
    finally:
        consumer.close()


def _records_between(consumer: Consumer, topic: str, partition: int, start: int, end: int, timeout_s: float) -> bool:
    """Raises: KafkaException; KafkaRequestFailed: nothing read within ``timeout_s``."""
    low, _high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
    start = max(start, low)
    if start >= end:
        return False
    consumer.assign([TopicPartition(topic, partition, start)])
    for _ in range(int(timeout_s / 0.5)):
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return False
            continue
        offset = msg.offset()
        return offset is not None and offset < end
    raise KafkaRequestFailed(f"could not read {topic}[{partition}] from {start} within {timeout_s} s")


def committed_offset(
    bootstrap: str,
    group: str,
    topic: str,
    partition: int,
    timeout_s: float = 15.0,
    security: KafkaSecurity = PLAINTEXT,
) -> int:
    """The offset ``group`` committed for the partition, 0 if none (blocking; does not join the group).

    Raises:
        KafkaRequestFailed: the broker did not answer within ``timeout_s``.
    """
    consumer = Consumer(client_config(bootstrap, security, **{"group.id": group, "enable.auto.commit": False}))
    try:
        [committed] = consumer.committed([TopicPartition(topic, partition)], timeout=timeout_s)
        offset = committed.offset
        return offset if offset is not None and offset >= 0 else 0
    except KafkaException as exc:
        raise KafkaRequestFailed(f"{topic}[{partition}]: offset committed by {group} not read: {exc}") from exc
    finally:
        consumer.close()


@dataclass
class _Rereading:
    """A partition sought back to ``offset``: later records still queued are dropped until it comes."""

    offset: int
    generation: int
    since: float
    sought: float  # when the last seek was made


class PartitionLog(Protocol):
    """What the guard asks Kafka about the topic it guards (blocking calls, run in an executor)."""

    @property
    def topic(self) -> str: ...

    def has_records(self, partition: int, start: int, end: int) -> bool: ...

    def committed(self, partition: int) -> int: ...


@dataclass(frozen=True)
class KafkaPartitionLog:
    bootstrap: str
    topic: str
    group: str
    security: KafkaSecurity = PLAINTEXT

    def has_records(self, partition: int, start: int, end: int) -> bool:
        return records_between(self.bootstrap, self.topic, partition, start, end, security=self.security)

    def committed(self, partition: int) -> int:
        return committed_offset(self.bootstrap, self.group, self.topic, partition, security=self.security)


class PositionGuard:
    def __init__(
        self,
        store: KeyValueStore,
        log: PartitionLog,
        seek: Callable[[int, int], Awaitable[None]],
        reread_timeout_s: float = REREAD_TIMEOUT_S,
    ) -> None:
        self._store = store
        self._log = log
        self._topic = log.topic
        self._seek = seek
        self._reread_timeout_s = reread_timeout_s
        self._rereading: dict[int, _Rereading] = {}

    def _key(self, partition: int) -> bytes:
        return b"\x00position\x00" + self._topic.encode() + b"\x00" + partition.to_bytes(4, "big")

    def _stored(self, partition: int) -> int | None:
        raw = self._store.get(self._key(partition))
        return None if raw is None else int.from_bytes(raw, "big")

    async def admit(self, events: list[Any]) -> tuple[list[Any], int | None, list[Any]]:
        """The events of one partition (in offset order) that are new, the new position,
        and the events that may be acked once the step is durable (the new ones
        and replays).

        Must run inside ``partition_of`` for that partition. The caller stores
        the position with ``advance`` once everything the events caused is
        durable, never before: a position durable ahead of its effects would
        make a replay skip them.

        When records were skipped (Faust dropped them during a rebalance),
        the partition is sought back to the first one and this batch's later
        events of it are neither admitted nor acked; until the re-read reaches
        that offset, queued later records are dropped the same way.

        Raises:
            GapDetected: the re-read did not bring the skipped records back
                within ``reread_timeout_s``; the worker must restart.
        """
        partition = events[0].message.partition
        last = self._stored(partition)
        loop = asyncio.get_running_loop()
        rereading = self._rereading.get(partition)
        if rereading is not None and events[0].message.generation_id != rereading.generation:
            # A rebalance since the seek: Faust sought to the committed offset.
            del self._rereading[partition]
            rereading = None
        if last is None and events[0].message.offset != 0:
            # No position stored (state older than this guard): what the group
            # committed was processed, so the log is expected to go on from there.
            committed = await loop.run_in_executor(None, self._log.committed, partition)
            last = committed - 1 if committed > 0 else None
        admitted: list[Any] = []
        ackable: list[Any] = []
        for event in events:
            offset = event.message.offset
            if last is not None and offset <= last:
                ackable.append(event)
                continue  # a replay of what this agent already processed
            expected = 0 if last is None else last + 1
            if rereading is not None:
                if offset != rereading.offset:
                    if time.monotonic() - rereading.since > self._reread_timeout_s:
                        raise GapDetected(
                            f"{self._topic}[{partition}]: offset {rereading.offset} did not come back within"
                            f" {self._reread_timeout_s:.0f} s of seeking to it; restart resumes from the committed"
                            " offset"
                        )
                    break  # still a record queued before the seek: neither processed nor acked
                del self._rereading[partition]
                rereading = None
            elif offset != expected:
                skipped = await loop.run_in_executor(None, self._log.has_records, partition, expected, offset)
                if skipped:
                    log.warning(
                        "%s[%d]: offsets %d..%d never reached the agent (Faust skips records during a rebalance);"
                        " reading the partition again from %d",
                        self._topic,
                        partition,
                        expected,
                        offset - 1,
                        expected,
                    )
                    await self._seek(partition, expected)
                    now = time.monotonic()
                    rereading = self._rereading[partition] = _Rereading(expected, event.message.generation_id, now, now)
                    break
            admitted.append(event)
            ackable.append(event)
            last = offset
        return admitted, last, ackable

    def rereading(self) -> set[int]:
        """The partitions sought back whose re-read has not arrived yet."""
        return set(self._rereading)

    async def seek_again(self, after_s: float = RESEEK_S) -> None:
        """Seek again every partition whose re-read has not arrived ``after_s`` after its last seek.

        Faust's fetch loop may still be handing over records it fetched
        before the seek; each one sets Faust's read offset past the sought
        one again, and the re-fetched records are then dropped as already
        read. Run periodically: once that loop has moved on, a new seek sticks.
        """
        now = time.monotonic()
        for partition, rereading in list(self._rereading.items()):
            if now - rereading.sought >= after_s:
                rereading.sought = now
                log.info("%s[%d]: seeking to %d again", self._topic, partition, rereading.offset)
                await self._seek(partition, rereading.offset)

    def advance(self, partition: int, last: int | None) -> None:
        """Store the position returned by ``admit`` if it moved (a write is a changelog record).

        Inside ``partition_of``.
        """
        if last is not None and last != self._stored(partition):
            self._store.put(self._key(partition), last.to_bytes(8, "big"))
