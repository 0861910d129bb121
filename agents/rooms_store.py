"""The router's room state: one RocksDB per input partition, backed by a compacted changelog topic.

The router owns input partitions through its own consumer group; for each
partition it owns, this store keeps every room's local members and aliases
(``streams.rooms.RoomState``) in ``<state dir>/rooms/p<N>`` and in the
compacted topic ``<app>.rooms`` (key room ID, partition = input partition).

Write order per batch (the router keeps it): changelog records acknowledged
by Kafka → ``commit`` writes them to RocksDB together with the changelog
offset they reached → input offsets committed. So the local database is never
ahead of the changelog, and after a crash or a partition coming back from
another worker, ``assign`` replays the changelog from the stored offset to its
end: a warm start reads only the tail, a wiped folder reads it all. Replayed
input is harmless: applying a membership event twice gives the same room.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from rocksdict import Options, Rdict, WriteBatch

from streams.errors import InvariantBroken, KafkaRequestFailed, LocalStoreFailed
from streams.matrix import RoomID
from streams.rooms import RoomState, decode_room, encode_room

log = logging.getLogger(__name__)

# Room IDs start with "!": this key can never be a room's.
OFFSET_KEY = b"\x00changelog-offset"
# Decoded rooms kept per partition; cleared when full (memory stays flat).
CACHE_SIZE = 10_000


class RoomsStore:
    def __init__(self, directory: Path, kafka_config: Mapping[str, Any], changelog_topic: str) -> None:
        """``kafka_config``: servers, security and logger (``agents.kafka_config.confluent_config``)."""
        self._directory = directory
        self._kafka_config = kafka_config
        self.changelog_topic = changelog_topic
        self._dbs: dict[int, Rdict] = {}
        self._cache: dict[int, dict[RoomID, RoomState]] = {}

    @property
    def partitions(self) -> list[int]:
        return sorted(self._dbs)

    def assign(self, partitions: Iterable[int]) -> None:
        """Open each partition's database and bring it up to the changelog's end.

        Raises:
            KafkaRequestFailed: the changelog cannot be read (naming the partition).
            LocalStoreFailed: a partition's RocksDB cannot be opened (naming its folder).
            InvariantBroken: a stored room cannot be decoded.
        """
        for partition in partitions:
            if partition in self._dbs:
                continue
            options = Options(raw_mode=True)
            options.create_if_missing(True)
            options.set_write_buffer_size(4 * 1024 * 1024)
            path = self._directory / f"p{partition}"
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                db = Rdict(str(path), options)
            except Exception as exc:  # rocksdict raises plain Exception (a held lock, an unreadable folder)
                raise LocalStoreFailed(f"rooms of input partition {partition}: cannot open {path}: {exc}") from exc
            self._dbs[partition] = db
            self._cache[partition] = {}
            self._restore(partition, db)

    def revoke(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            db = self._dbs.pop(partition, None)
            self._cache.pop(partition, None)
            if db is not None:
                db.close()

    def close(self) -> None:
        self.revoke(list(self._dbs))

    def load(self, partition: int, room_id: RoomID) -> RoomState:
        """The room as of the last commit.

        Raises:
            InvariantBroken: the partition is not assigned here, or its stored value is unreadable.
        """
        cache = self._cache.get(partition)
        if cache is None:
            raise InvariantBroken(f"room {room_id} read on input partition {partition}, which this router does not own")
        room = cache.get(room_id)
        if room is None:
            raw = self._dbs[partition].get(room_id.encode())
            room = RoomState() if raw is None else decode_room(raw)
            if len(cache) >= CACHE_SIZE:
                cache.clear()
            cache[room_id] = room
        return room

    def commit(self, rooms: Mapping[tuple[int, RoomID], RoomState], offsets: Mapping[int, int]) -> None:
        """Store rooms whose changelog records Kafka acknowledged, with the changelog offsets they reached.

        Raises:
            InvariantBroken: a room of a partition this router does not own.
        """
        batches: dict[int, WriteBatch] = {}
        for (partition, room_id), room in rooms.items():
            if partition not in self._dbs:
                raise InvariantBroken(f"room {room_id} written on input partition {partition}, not owned here")
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = WriteBatch(raw_mode=True)
            batch.put(room_id.encode(), encode_room(room))
            self._cache[partition][room_id] = room
        for partition, offset in offsets.items():
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = WriteBatch(raw_mode=True)
            batch.put(OFFSET_KEY, offset.to_bytes(8, "big"))
        for partition, batch in batches.items():
            self._dbs[partition].write(batch)

    def _restore(self, partition: int, db: Rdict) -> None:
        stored = db.get(OFFSET_KEY)
        start = OFFSET_BEGINNING if stored is None else int.from_bytes(stored, "big") + 1
        consumer = Consumer(
            {
                **self._kafka_config,
                "group.id": "appservice-streams-rooms-restore",  # never commits
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
        began = time.monotonic()
        applied = 0
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.changelog_topic, partition), timeout=15)
            first = low if start == OFFSET_BEGINNING else max(start, low)
            if first >= high:
                return
            consumer.assign([TopicPartition(self.changelog_topic, partition, first)])
            batch = WriteBatch(raw_mode=True)
            last = -1
            while last < high - 1:
                message = consumer.poll(5.0)
                if message is None:
                    raise KafkaRequestFailed(
                        f"restoring rooms of partition {partition}: no record for 5 s at offset {last + 1} of {high}"
                    )
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        break
                    raise KafkaRequestFailed(f"restoring rooms of partition {partition}: {error}")
                key, value = message.key(), message.value()
                if key is not None:
                    if value is None:
                        batch.delete(key)
                    else:
                        decode_room(value)  # refuse to store what load() could not read
                        batch.put(key, value)
                last = message.offset() or 0
                applied += 1
            if last >= 0:
                batch.put(OFFSET_KEY, last.to_bytes(8, "big"))
                db.write(batch)
        except KafkaException as exc:
            raise KafkaRequestFailed(f"restoring rooms of partition {partition}: {exc}") from exc
        finally:
            consumer.close()
        log.info(
            "rooms of input partition %d: %s, %d changelog records applied in %.2f s",
            partition,
            "rebuilt" if stored is None else "caught up",
            applied,
            time.monotonic() - began,
        )
