"""Who gets what: every input record mapped to an item kind and its recipients.

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

from dataclasses import dataclass

from streams.envelope import DeviceData, Ephemeral, RoomEvent, ToDevice
from streams.interest import Interest, RoomView
from streams.machine import ItemKind
from streams.matrix import AppserviceID
from streams.registration import Registration


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
