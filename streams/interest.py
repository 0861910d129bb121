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

# Rule 5 answers kept per appservice, keyed by the member set itself (a
# frozenset caches its hash, and a dict hit on the same object is an identity
# check), so an unchanged room costs one lookup instead of members x regexes.
MEMBER_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class RoomView:
    """What rules 3-5 need to know about the event's room."""

    room_id: RoomID
    local_aliases: frozenset[str] = frozenset()
    local_members: frozenset[str] = frozenset()


class _Matcher:
    """One registration's rules, precompiled, with its bounded rule-5 cache."""

    __slots__ = (
        "aliases",
        "as_user",
        "members",
        "registration",
        "rooms",
        "server_name",
        "users",
    )

    def __init__(self, registration: Registration, server_name: str) -> None:
        self.registration = registration
        self.as_user: str = registration.user_id(server_name)
        self.server_name = server_name
        self.users = tuple(ns.pattern.match for ns in registration.users)
        self.aliases = tuple(ns.pattern.match for ns in registration.aliases)
        self.rooms = tuple(ns.pattern.match for ns in registration.rooms)
        self.members: dict[frozenset[str], bool] = {}

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
        members = room.local_members
        if not members:
            return False
        cached = self.members.get(members)
        if cached is None:
            cached = self._any_local_member(members)
            if len(self.members) >= MEMBER_CACHE_SIZE:
                self.members.clear()
            self.members[members] = cached
        return cached

    def _any_local_member(self, members: frozenset[str]) -> bool:
        server_name = self.server_name
        for member in members:
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
    """

    def __init__(self, registrations: Sequence[Registration], server_name: str) -> None:
        self._server_name = server_name
        self._matchers = tuple(_Matcher(r, server_name) for r in registrations)
        self._by_id = {m.registration.id: m for m in self._matchers}

    def _matcher(self, registration: Registration) -> _Matcher:
        matcher = self._by_id.get(registration.id)
        if matcher is not None and matcher.registration is registration:
            return matcher
        # A registration this instance was not built with (or an equal copy):
        # still answered correctly, just without the cache.
        return _Matcher(registration, self._server_name)

    def appservices_for_event(self, event: Mapping[str, object], room: RoomView) -> tuple[AppserviceID, ...]:
        """IDs of every interested appservice, in registration order."""
        return tuple(m.registration.id for m in self._matchers if m.event(event, room))

    def appservices_for_room(
        self, room: RoomView, only: Callable[[Registration], bool] = lambda r: True
    ) -> tuple[AppserviceID, ...]:
        """IDs of appservices that ``only`` admits and the room alone interests (rules 3-5)."""
        return tuple(m.registration.id for m in self._matchers if only(m.registration) and m.room(room))

    def appservices_for_user(
        self, user_id: str, only: Callable[[Registration], bool] = lambda r: True
    ) -> tuple[AppserviceID, ...]:
        """IDs of appservices that ``only`` admits whose user or ``users`` namespace has ``user_id``."""
        return tuple(m.registration.id for m in self._matchers if only(m.registration) and m.user(user_id))

    def is_interested(self, registration: Registration, event: Mapping[str, object], room: RoomView) -> bool:
        """Whether ``registration`` wants ``event`` (rules 1-5); ``room`` is the event's room."""
        return self._matcher(registration).event(event, room)

    def user_is_interesting(self, registration: Registration, user_id: str) -> bool:
        """Whether ``user_id`` is the appservice's user or in its ``users`` namespace."""
        return self._matcher(registration).user(user_id)

    def room_is_interesting(self, registration: Registration, room: RoomView) -> bool:
        """Whether the room alone interests ``registration`` (rules 3-5)."""
        return self._matcher(registration).room(room)
