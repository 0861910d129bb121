"""The routing agent: input records → items on each interested appservice's inbox partition.

Consumes ``matrix.events`` (keyed by room, or by user for presence, to-device
and device data), keeps each room's local members and aliases in the
``rooms`` table, asks ``streams.routing`` which appservices want the record,
and writes a copy to the appservice's inbox partition (one record per
partition per batch, see ``streams.records``). Each copy
carries the event's input position, which the deliverer uses to drop replays.
A record nobody can read goes to the dead-letter topic; it never stalls the
partition.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

from agents.batching import take_available
from agents.fatal import fatal
from agents.pipeline import Pipeline
from agents.positions import PositionGuard
from agents.table_store import TableStore, partition_of
from agents.topics import key_partition
from streams import envelope
from streams.errors import BadRecord
from streams.machine import Item, SourcePosition
from streams.matrix import AppserviceID
from streams.records import encode_routed
from streams.rooms import RoomState, apply_event, decode_room, encode_room, with_aliases
from streams.routing import recipients

log = logging.getLogger(__name__)

# Routed items of one batch: inbox partition → appservice → items in input order.
Routed = defaultdict[int, defaultdict[AppserviceID, list[Item]]]


def install(pipeline: Pipeline) -> None:
    server_name = pipeline.settings.server_name
    interest = pipeline.interest
    inbox = pipeline.inbox

    store = TableStore(pipeline.rooms)
    settings = pipeline.settings

    def load(room_id: str) -> RoomState:
        raw = store.get(room_id.encode())
        return RoomState() if raw is None else decode_room(raw)

    guard = PositionGuard(store, settings.input_topic, settings.bootstrap_servers)
    inbox_partitions = {
        appservice_id: key_partition(appservice_id.encode(), settings.partitions)
        for appservice_id in pipeline.registrations
    }

    @pipeline.app.agent(pipeline.input_topic, name="router")  # type: ignore[untyped-decorator]
    async def route(stream: Any) -> None:
        async for batch in take_available(stream, settings.batch_max, within=settings.batch_within_s):
            try:
                by_partition: dict[int, list[Any]] = defaultdict(list)
                for event in batch:
                    by_partition[event.message.partition].append(event)
                routed: Routed = defaultdict(lambda: defaultdict(list))
                positions = []
                ackable: list[Any] = []
                for events in by_partition.values():
                    with partition_of(events[-1]):
                        admitted, last, done = await guard.admit(events)
                        ackable.extend(done)
                        for event in admitted:
                            await route_one(event, routed)
                    positions.append((events[-1], last))
                # One inbox record per inbox partition per batch, items in
                # input order: the per-record cost in Faust and aiokafka is
                # what limits us (see streams.records).
                sent = [
                    await inbox.send(key=None, value=value, partition=partition)
                    for partition, groups in routed.items()
                    for value in encode_routed(groups)
                ]
                # Nothing of this batch is acked (and so committed), and no
                # position moves, before the routed copies are in Kafka.
                await asyncio.gather(*sent)
                for event, last in positions:
                    with partition_of(event):
                        guard.advance(event.message.partition, last)
                await store.durable()
                pipeline.acks.processed(ackable)
            except Exception as exc:
                fatal(exc, "router")

    async def route_one(event: Any, routed: Routed) -> None:
        message = event.message
        try:
            record = envelope.decode(event.value)
        except BadRecord as exc:
            await pipeline.to_dead_letter(event, str(exc))
            return
        if isinstance(record, envelope.RoomAliases):
            room = load(record.room_id)
            updated = with_aliases(room, record.aliases, server_name)
            if updated != room:
                store.put(record.room_id.encode(), encode_room(updated))
            return
        view = None
        if isinstance(record, envelope.RoomEvent):
            room_id = record.room_id
            room = load(room_id)
            updated = apply_event(room, record.event, server_name)
            if updated is not room:
                store.put(room_id.encode(), encode_room(updated))
            view = updated.view(room_id)
        elif isinstance(record, envelope.Ephemeral) and record.room_id is not None:
            view = load(record.room_id).view(record.room_id)
        delivery = recipients(record, view, interest)
        item = Item(delivery.kind, SourcePosition(message.partition, message.offset), delivery.payload)
        for appservice_id in delivery.appservices:
            routed[inbox_partitions[appservice_id]][appservice_id].append(item)
