"""Who gets what: every input record mapped to an item kind and its recipients.

``route_batch`` is the router's whole decision for a batch of input records
(room state kept up to date, items grouped by inbox partition and
appservice); ``recipients`` is the decision for one record.

Rooms events follow the five interest rules (``streams.interest``). For the
rest, per the reference and the appservice spec:

* typing and receipts: appservices that want ephemeral data
  (``receive_ephemeral`` or ``de.sorunome.msc2409.push_ephemeral``) and are
  interested in the room (rules 3-5);
* presence: those that want ephemeral data and are interested in the user;
* to-device: appservices whose user or ``users`` namespace has the recipient;
* device-list changes and key counts: ``org.matrix.msc3202`` appservices
  interested in the user.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from streams import envelope
from streams.backlog import MAX_CHUNK_BYTES
from streams.dead_letter import Reason
from streams.envelope import DeviceData, Ephemeral, RoomEvent, ToDevice
from streams.errors import BadRecord
from streams.interest import Interest, RoomView
from streams.machine import Item, ItemKind, SourcePosition
from streams.matrix import AppserviceID, RoomID
from streams.registration import Registration
from streams.rooms import RoomState, apply_event, with_aliases, with_members

# The most one input record may carry. Its item must fit one routed inbox
# record (``streams.records.MAX_BATCH_BYTES``), one backlog chunk and one part
# of a stored transaction, each one Kafka record under the broker's default
# 1 MB limit. A compressed input record can be far larger than that limit and
# still be accepted by the broker: forwarding it whole would be refused, and
# the partition would stop. The Matrix spec caps an event at 65,536 bytes.
MAX_INPUT_RECORD_BYTES = MAX_CHUNK_BYTES


@dataclass(frozen=True)
class Delivery:
    kind: ItemKind
    payload: bytes
    appservices: tuple[AppserviceID, ...]


def _wants_ephemeral(registration: Registration) -> bool:
    return registration.wants_ephemeral


def _msc3202(registration: Registration) -> bool:
    return registration.msc3202


def recipients(
    record: RoomEvent | Ephemeral | ToDevice | DeviceData, room: RoomView | None, interest: Interest
) -> Delivery:
    """Raises: ValueError when a room record comes without its ``RoomView``."""
    if isinstance(record, RoomEvent):
        if room is None:
            raise ValueError("a room event needs its room")
        return Delivery(ItemKind.EVENT, record.payload, interest.appservices_for_event(record.event, room))
    if isinstance(record, Ephemeral):
        if record.user_id is not None:
            ids = interest.appservices_for_user(record.user_id, _wants_ephemeral)
        elif room is None:
            raise ValueError("a room EDU needs its room")
        else:
            ids = interest.appservices_for_room(room, _wants_ephemeral)
        return Delivery(ItemKind.EPHEMERAL, record.payload, ids)
    if isinstance(record, ToDevice):
        return Delivery(ItemKind.TO_DEVICE, record.payload, interest.appservices_for_user(record.to_user_id))
    return Delivery(ItemKind.DEVICE, record.payload, interest.appservices_for_user(record.user_id, _msc3202))


@dataclass(frozen=True)
class InputRecord:
    """One record of the input topic, as the router reads it."""

    partition: int
    offset: int
    value: bytes | None
    timestamp_ms: int | None = None  # the record's Kafka timestamp: when its items arrived


@dataclass
class RoutedBatch:
    """What one batch of input records becomes; the shell writes it, then commits the input."""

    # inbox partition → appservice → items, each appservice's in input order
    items: dict[int, dict[AppserviceID, list[Item]]] = field(default_factory=dict)
    # (input partition, room ID) → the room after the batch, for rooms it changed
    rooms: dict[tuple[int, RoomID], RoomState] = field(default_factory=dict)
    # records that cannot be delivered, with the reason and what exactly was wrong
    rejected: list[tuple[InputRecord, Reason, str]] = field(default_factory=list)


def route_batch(
    records: Sequence[InputRecord],
    load_room: Callable[[int, RoomID], RoomState],
    interest: Interest,
    server_name: str,
    inbox_partition: Callable[[AppserviceID], int],
) -> RoutedBatch:
    """Route records in input order; rooms read through the batch's own changes first.

    Never raises on bad input: a record that is not a valid envelope, or
    larger than ``MAX_INPUT_RECORD_BYTES``, is ``rejected`` (for the
    dead-letter topic) and the batch goes on.
    """
    batch = RoutedBatch()
    rooms = batch.rooms

    def room_of(partition: int, room_id: RoomID) -> RoomState:
        room = rooms.get((partition, room_id))
        return load_room(partition, room_id) if room is None else room

    for record in records:
        size = 0 if record.value is None else len(record.value)
        if size > MAX_INPUT_RECORD_BYTES:
            detail = f"{size} bytes, over the {MAX_INPUT_RECORD_BYTES} bytes an input record may carry"
            batch.rejected.append((record, Reason.TOO_LARGE, detail))
            continue
        try:
            decoded = envelope.decode(record.value)
        except BadRecord as exc:
            batch.rejected.append((record, Reason.MALFORMED, str(exc)))
            continue
        view = None
        if isinstance(decoded, (envelope.RoomAliases, envelope.RoomMembers)):
            room = room_of(record.partition, decoded.room_id)
            if isinstance(decoded, envelope.RoomAliases):
                updated = with_aliases(room, decoded.aliases, server_name)
            else:
                updated = with_members(room, decoded.members, server_name)
            if updated != room:
                rooms[(record.partition, decoded.room_id)] = updated
            continue
        if isinstance(decoded, RoomEvent):
            room = room_of(record.partition, decoded.room_id)
            updated = apply_event(room, decoded.event, server_name)
            if updated is not room:
                rooms[(record.partition, decoded.room_id)] = updated
            view = updated.view(decoded.room_id)
        elif isinstance(decoded, Ephemeral) and decoded.room_id is not None:
            view = room_of(record.partition, decoded.room_id).view(decoded.room_id)
        delivery = recipients(decoded, view, interest)
        if not delivery.appservices:
            continue
        item = Item(
            delivery.kind, SourcePosition(record.partition, record.offset), delivery.payload, record.timestamp_ms
        )
        for appservice_id in delivery.appservices:
            batch.items.setdefault(inbox_partition(appservice_id), {}).setdefault(appservice_id, []).append(item)
    return batch
