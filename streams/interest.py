"""Which appservices want an event: Synapse's interest rules, in order.

First match wins; every regex is applied with ``pattern.match`` (anchored at
the start only, like Synapse's ``re.match``):

1. the sender is the appservice's own user or matches a ``users`` regex
   (remote senders count);
2. for ``m.room.member``, the ``state_key`` is the appservice's user or
   matches ``users``;
3. the room ID matches ``rooms``;
4. a local alias of the room matches ``aliases``;
5. a local, currently joined member of the room is the appservice's user or
   matches ``users`` (remote members never count).

``exclusive`` does not change delivery. Events are decoded JSON: a missing or
non-string field simply does not match; nothing here raises on bad input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from streams.matrix import MEMBER_EVENT, AppserviceID, RoomID, is_local
from streams.registration import Registration

# Bounds of the per-Interest caches; each is cleared when full, so memory stays
# flat however many distinct users, rooms or member sets go by.
USER_CACHE_SIZE = 16384  # user ID -> appservices whose user or ``users`` has it
ROOM_CACHE_SIZE = 1024  # (room ID, aliases, members) -> appservices of rules 3-5
MASK_CACHE_SIZE = 1024  # set of appservices -> their IDs in registration order


@dataclass(frozen=True, slots=True)
class RoomView:
    """What rules 3-5 need to know about the event's room."""

    room_id: RoomID
    local_aliases: frozenset[str] = frozenset()
    local_members: frozenset[str] = frozenset()


class _Matcher:
    """One registration's rules, precompiled, answered without any cache.

    Used for a registration the ``Interest`` was not built with.
    """

    __slots__ = ("aliases", "as_user", "registration", "rooms", "server_name", "users")

    def __init__(self, registration: Registration, server_name: str) -> None:
        self.registration = registration
        self.as_user: str = registration.user_id(server_name)
        self.server_name = server_name
        self.users = tuple(ns.pattern.match for ns in registration.users)
        self.aliases = tuple(ns.pattern.match for ns in registration.aliases)
        self.rooms = tuple(ns.pattern.match for ns in registration.rooms)

    def user(self, user_id: object) -> bool:
        if not isinstance(user_id, str):
            return False
        if user_id == self.as_user:
            return True
        # A plain loop: measurably faster than any() over a generator here.
        for match in self.users:  # noqa: SIM110
            if match(user_id):
                return True
        return False

    def room(self, room: RoomView) -> bool:
        room_id = room.room_id
        if isinstance(room_id, str):
            for match in self.rooms:
                if match(room_id):
                    return True
        if self.aliases:
            for alias in room.local_aliases:
                if isinstance(alias, str) and is_local(alias, self.server_name):
                    for match in self.aliases:
                        if match(alias):
                            return True
        server_name = self.server_name
        for member in room.local_members:
            if isinstance(member, str) and is_local(member, server_name) and self.user(member):
                return True
        return False

    def event(self, event: Mapping[str, object], room: RoomView) -> bool:
        if self.user(event.get("sender")):
            return True
        if event.get("type") == MEMBER_EVENT and self.user(event.get("state_key")):
            return True
        return self.room(room)


class Interest:
    """Answers "which appservices want this?" for a fixed set of registrations.

    Construction compiles nothing new (patterns come compiled from the
    registrations) and does no I/O. The instance keeps small bounded caches,
    so share one per worker rather than building one per event.

    Internally a set of appservices is an int bitmask, bit ``i`` standing for
    the ``i``-th registration. An event's answer is the union of three cached
    masks (sender; ``state_key`` of a member event; the room, rules 3-5), so a
    repeated sender and an unchanged room cost a few dict lookups, not one
    regex per appservice. Every rule is a pure function of the user ID or of
    the ``RoomView``'s fields, so a cached answer never goes stale: a room whose
    members change comes as a new member set, hence a new key.
    """

    def __init__(self, registrations: Sequence[Registration], server_name: str) -> None:
        self._server_name = server_name
        self._registrations = tuple(registrations)
        self._ids = tuple(r.id for r in self._registrations)
        # The first registration under an ID is the one cached answers stand for.
        self._index: dict[AppserviceID, int] = {}
        for i, r in enumerate(self._registrations):
            self._index.setdefault(r.id, i)
        self._as_users: dict[str, int] = {}
        users: list[tuple[int, Callable[[str], object]]] = []
        aliases: list[tuple[int, Callable[[str], object]]] = []
        rooms: list[tuple[int, Callable[[str], object]]] = []
        for i, r in enumerate(self._registrations):
            bit = 1 << i
            as_user = r.user_id(server_name)
            self._as_users[as_user] = self._as_users.get(as_user, 0) | bit
            users.extend((bit, ns.pattern.match) for ns in r.users)
            aliases.extend((bit, ns.pattern.match) for ns in r.aliases)
            rooms.extend((bit, ns.pattern.match) for ns in r.rooms)
        self._user_patterns = tuple(users)
        self._alias_patterns = tuple(aliases)
        self._room_patterns = tuple(rooms)
        self._users: dict[str, int] = {}
        self._rooms: dict[tuple[object, frozenset[str], frozenset[str]], int] = {}
        self._masks: dict[int, tuple[AppserviceID, ...]] = {}

    # --- masks ----------------------------------------------------------------------

    def _user_mask(self, user_id: object) -> int:
        """Rules 1-2 for one user ID: whose user or ``users`` namespace has it."""
        if not isinstance(user_id, str):
            return 0
        mask = self._users.get(user_id)
        if mask is None:
            mask = self._as_users.get(user_id, 0)
            for bit, match in self._user_patterns:
                if not mask & bit and match(user_id):
                    mask |= bit
            if len(self._users) >= USER_CACHE_SIZE:
                self._users.clear()
            self._users[user_id] = mask
        return mask

    def _room_mask(self, room: RoomView) -> int:
        """Rules 3-5 for one room."""
        key = (room.room_id, room.local_aliases, room.local_members)
        try:
            mask = self._rooms.get(key)
        except TypeError:  # an unhashable room ID: answer, just without the cache
            return self._compute_room_mask(room)
        if mask is None:
            mask = self._compute_room_mask(room)
            if len(self._rooms) >= ROOM_CACHE_SIZE:
                self._rooms.clear()
            self._rooms[key] = mask
        return mask

    def _compute_room_mask(self, room: RoomView) -> int:
        mask = 0
        room_id = room.room_id
        if isinstance(room_id, str):
            for bit, match in self._room_patterns:
                if match(room_id):
                    mask |= bit
        if self._alias_patterns:
            for alias in room.local_aliases:
                if isinstance(alias, str) and is_local(alias, self._server_name):
                    for bit, match in self._alias_patterns:
                        if match(alias):
                            mask |= bit
        server_name = self._server_name
        for member in room.local_members:
            if isinstance(member, str) and is_local(member, server_name):
                mask |= self._user_mask(member)
        return mask

    def _event_mask(self, event: Mapping[str, object], room: RoomView) -> int:
        mask = self._user_mask(event.get("sender")) | self._room_mask(room)
        if event.get("type") == MEMBER_EVENT:
            mask |= self._user_mask(event.get("state_key"))
        return mask

    def _ids_of(self, mask: int) -> tuple[AppserviceID, ...]:
        """The IDs of the appservices in ``mask``, in registration order."""
        ids = self._masks.get(mask)
        if ids is None:
            ids = tuple(as_id for i, as_id in enumerate(self._ids) if mask >> i & 1)
            if len(self._masks) >= MASK_CACHE_SIZE:
                self._masks.clear()
            self._masks[mask] = ids
        return ids

    def _filtered(self, mask: int, only: Callable[[Registration], bool]) -> tuple[AppserviceID, ...]:
        if not mask:
            return ()
        registrations = self._registrations
        return tuple(r.id for i, r in enumerate(registrations) if mask >> i & 1 and only(r))

    def _bit(self, registration: Registration) -> int:
        """The bit standing for ``registration``, or 0 if this instance was not built with it."""
        i = self._index.get(registration.id)
        if i is not None and self._registrations[i] is registration:
            return 1 << i
        return 0

    # --- public ---------------------------------------------------------------------

    def appservices_for_event(self, event: Mapping[str, object], room: RoomView) -> tuple[AppserviceID, ...]:
        """IDs of every interested appservice, in registration order."""
        return self._ids_of(self._event_mask(event, room))

    def appservices_for_room(
        self, room: RoomView, only: Callable[[Registration], bool] = lambda r: True
    ) -> tuple[AppserviceID, ...]:
        """IDs of appservices that ``only`` admits and the room alone interests (rules 3-5)."""
        return self._filtered(self._room_mask(room), only)

    def appservices_for_user(
        self, user_id: str, only: Callable[[Registration], bool] = lambda r: True
    ) -> tuple[AppserviceID, ...]:
        """IDs of appservices that ``only`` admits whose user or ``users`` namespace has ``user_id``."""
        return self._filtered(self._user_mask(user_id), only)

    def is_interested(self, registration: Registration, event: Mapping[str, object], room: RoomView) -> bool:
        """Whether ``registration`` wants ``event`` (rules 1-5); ``room`` is the event's room."""
        bit = self._bit(registration)
        if bit:
            return bool(self._event_mask(event, room) & bit)
        # A registration this instance was not built with (or an equal copy):
        # still answered correctly, just without the cache.
        return _Matcher(registration, self._server_name).event(event, room)

    def user_is_interesting(self, registration: Registration, user_id: str) -> bool:
        """Whether ``user_id`` is the appservice's user or in its ``users`` namespace."""
        bit = self._bit(registration)
        if bit:
            return bool(self._user_mask(user_id) & bit)
        return _Matcher(registration, self._server_name).user(user_id)

    def room_is_interesting(self, registration: Registration, room: RoomView) -> bool:
        """Whether the room alone interests ``registration`` (rules 3-5)."""
        bit = self._bit(registration)
        if bit:
            return bool(self._room_mask(room) & bit)
        return _Matcher(registration, self._server_name).room(room)
