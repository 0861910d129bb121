"""The caches behind ``Interest`` never change an answer (reference section 3).

``naive_*`` below is the rule-by-rule logic ``Interest`` had before it cached
anything, kept here as the oracle the cached answers are checked against.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.interest import ROOM_CACHE_SIZE, USER_CACHE_SIZE, Interest, RoomView
from streams.matrix import AppserviceID, RoomID
from streams.registration import Registration, parse_registration

SERVER = "example.org"
ROOM = RoomID("!room:example.org")
OTHER_ROOM = RoomID("!other:example.org")


def registration(
    as_id: str,
    *,
    users: Sequence[str] = (),
    aliases: Sequence[str] = (),
    rooms: Sequence[str] = (),
    ephemeral: bool = False,
) -> Registration:
    def namespace(regexes: Sequence[str]) -> list[dict[str, object]]:
        return [{"regex": regex, "exclusive": True} for regex in regexes]

    data = {
        "id": as_id,
        "url": None,
        "as_token": f"as-{as_id}",
        "hs_token": f"hs-{as_id}",
        "sender_localpart": f"{as_id}_bot",
        "receive_ephemeral": ephemeral,
        "namespaces": {"users": namespace(users), "aliases": namespace(aliases), "rooms": namespace(rooms)},
    }
    return parse_registration(data, Path(f"{as_id}.yaml"))


def event(sender: object, type_: str = "m.room.message", **fields: object) -> dict[str, object]:
    return {"type": type_, "sender": sender, **fields}


def ids(*names: str) -> tuple[AppserviceID, ...]:
    return tuple(AppserviceID(name) for name in names)


# --- the oracle: no caches, one registration at a time --------------------------------


def naive_user(reg: Registration, user_id: object) -> bool:
    if not isinstance(user_id, str):
        return False
    return user_id == reg.user_id(SERVER) or any(ns.pattern.match(user_id) for ns in reg.users)


def naive_room(reg: Registration, room: RoomView) -> bool:
    if isinstance(room.room_id, str) and any(ns.pattern.match(room.room_id) for ns in reg.rooms):
        return True
    for alias in room.local_aliases:
        if alias.endswith(":" + SERVER) and any(ns.pattern.match(alias) for ns in reg.aliases):
            return True
    return any(m.endswith(":" + SERVER) and naive_user(reg, m) for m in room.local_members)


def naive_event(reg: Registration, ev: Mapping[str, object], room: RoomView) -> bool:
    if naive_user(reg, ev.get("sender")):
        return True
    if ev.get("type") == "m.room.member" and naive_user(reg, ev.get("state_key")):
        return True
    return naive_room(reg, room)


# --- examples ---------------------------------------------------------------------------

A = registration("a", users=(r"@a_.*:example\.org",))
B = registration("b", users=(r"@b_.*",), rooms=(r"!other:",), ephemeral=True)
C = registration("c", aliases=(r"#c_.*",))


def test_same_sender_in_two_rooms_with_different_interest() -> None:
    interest = Interest([A, B, C], SERVER)
    room = RoomView(ROOM, local_members=frozenset({"@b_x:example.org"}))
    other = RoomView(OTHER_ROOM)
    sender = "@a_x:example.org"

    assert interest.appservices_for_event(event(sender), room) == ids("a", "b")
    assert interest.appservices_for_event(event(sender), other) == ids("a", "b")
    assert interest.appservices_for_event(event(sender), RoomView(ROOM)) == ids("a")
    assert interest.appservices_for_event(event(sender), room) == ids("a", "b")


def test_member_event_adds_the_state_keys_appservice_only_for_member_events() -> None:
    interest = Interest([A, B, C], SERVER)
    room = RoomView(ROOM)

    assert interest.appservices_for_event(
        event("@x:example.org", "m.room.member", state_key="@b_y:elsewhere.net"), room
    ) == ids("b")
    assert interest.appservices_for_event(
        event("@a_x:example.org", "m.room.member", state_key="@b_y:elsewhere.net"), room
    ) == ids("a", "b")
    assert interest.appservices_for_event(event("@x:example.org", state_key="@b_y:elsewhere.net"), room) == ()


def test_registration_order_is_kept_whichever_rule_matches() -> None:
    regs = [
        registration("z", rooms=(r"!room:",)),
        registration("y", users=(r"@y_",)),
        registration("x", aliases=(r"#x",)),
        registration("w", users=(r"@w_",)),
    ]
    interest = Interest(regs, SERVER)
    room = RoomView(ROOM, local_aliases=frozenset({"#x:example.org"}), local_members=frozenset({"@w_1:example.org"}))

    result = interest.appservices_for_event(event("@y_1:example.org"), room)

    assert result == ids("z", "y", "x", "w")


def test_room_whose_members_change_gets_a_new_answer() -> None:
    interest = Interest([A, B], SERVER)
    sender = "@x:example.org"
    empty = RoomView(ROOM, local_members=frozenset({"@x:example.org"}))
    joined = RoomView(ROOM, local_members=empty.local_members | {"@a_new:example.org"})
    left = RoomView(ROOM, local_members=joined.local_members - {"@a_new:example.org"})

    assert interest.appservices_for_event(event(sender), empty) == ()
    assert interest.appservices_for_event(event(sender), joined) == ids("a")
    assert interest.appservices_for_event(event(sender), left) == ()


def test_room_aliases_changing_gets_a_new_answer() -> None:
    interest = Interest([C], SERVER)

    assert interest.appservices_for_room(RoomView(ROOM)) == ()
    assert interest.appservices_for_room(RoomView(ROOM, local_aliases=frozenset({"#c_1:example.org"}))) == ids("c")
    assert interest.appservices_for_room(RoomView(ROOM)) == ()


def test_remote_user_cached_as_a_sender_never_counts_as_a_room_member() -> None:
    interest = Interest([B], SERVER)
    remote = "@b_x:elsewhere.net"

    assert interest.appservices_for_event(event(remote), RoomView(ROOM)) == ids("b")
    assert (
        interest.appservices_for_event(event("@x:example.org"), RoomView(ROOM, local_members=frozenset({remote}))) == ()
    )


def test_user_cache_filled_past_its_bound_stays_bounded_and_right() -> None:
    interest = Interest([A, B], SERVER)
    users = [f"@{'a' if i % 3 else 'b'}_{i}:example.org" for i in range(USER_CACHE_SIZE * 2 + 5)]

    answers = [interest.appservices_for_user(user) for user in users]
    again = [interest.appservices_for_user(user) for user in users[:10]]

    assert answers == [ids("a") if i % 3 else ids("b") for i in range(len(users))]
    assert again == answers[:10]
    assert len(interest._users) <= USER_CACHE_SIZE


def test_room_cache_filled_past_its_bound_stays_bounded_and_right() -> None:
    interest = Interest([A, B], SERVER)
    rooms = [
        RoomView(ROOM, local_members=frozenset({f"@{'a' if i % 2 else 'x'}_{i}:example.org"}))
        for i in range(ROOM_CACHE_SIZE * 2 + 5)
    ]

    answers = [interest.appservices_for_room(room) for room in rooms]
    again = [interest.appservices_for_room(room) for room in rooms[:10]]

    assert answers == [ids("a") if i % 2 else () for i in range(len(rooms))]
    assert again == answers[:10]
    assert len(interest._rooms) <= ROOM_CACHE_SIZE


def test_only_filters_cached_answers_and_keeps_order() -> None:
    interest = Interest([A, B, C], SERVER)
    room = RoomView(OTHER_ROOM, local_aliases=frozenset({"#c_1:example.org"}))

    assert interest.appservices_for_room(room) == ids("b", "c")
    assert interest.appservices_for_room(room, lambda r: r.receive_ephemeral) == ids("b")
    assert interest.appservices_for_user("@b_1:example.org", lambda r: not r.receive_ephemeral) == ()
    assert interest.appservices_for_user("@b_1:example.org") == ids("b")


def test_non_string_or_unhashable_fields_never_match_and_never_raise() -> None:
    interest = Interest([A, B], SERVER)
    odd_room = RoomView(cast(RoomID, ["!other:example.org"]), local_members=frozenset({"@a_1:example.org"}))

    assert interest.appservices_for_event({"sender": ["@a_1:example.org"]}, RoomView(ROOM)) == ()
    assert interest.appservices_for_event({"type": "m.room.member", "state_key": {"k": 1}}, RoomView(ROOM)) == ()
    assert interest.appservices_for_event({}, odd_room) == ids("a")
    assert interest.room_is_interesting(B, odd_room) is False


def test_registrations_not_built_in_are_answered_without_the_cache() -> None:
    interest = Interest([A], SERVER)
    copy_of_a = registration("a", users=(r"@a_.*:example\.org",))
    late = registration("late", users=(r"@late_",))
    room = RoomView(ROOM, local_members=frozenset({"@late_1:example.org"}))

    assert interest.user_is_interesting(copy_of_a, "@a_1:example.org") is True
    assert interest.is_interested(late, event("@x:example.org"), room) is True
    assert interest.room_is_interesting(late, RoomView(ROOM)) is False
    assert interest.appservices_for_event(event("@x:example.org"), room) == ()


# --- property: cached answers equal the oracle's, query after query ----------------------

LOCALPARTS = ["a", "a_1", "b_1", "ab", "c_bot", "a_bot", "b_bot", "x"]
SERVERS = [SERVER, "elsewhere.net"]
user_ids = st.builds(lambda lp, s: f"@{lp}:{s}", st.sampled_from(LOCALPARTS), st.sampled_from(SERVERS))
user_fields = st.one_of(user_ids, st.none(), st.integers(), st.just(["@a_1:example.org"]))
regs = st.lists(
    st.tuples(
        st.lists(st.sampled_from([r"@a_", r"@b_.*:example\.org", r"@.*:elsewhere", r"@ab"]), max_size=2),
        st.lists(st.sampled_from([r"#a", r"#.*:example\.org", r"#b_"]), max_size=2),
        st.lists(st.sampled_from([r"!a", r"!.*:elsewhere", r"!b"]), max_size=2),
    ),
    max_size=6,
).map(
    lambda specs: [
        registration(f"{'abcdefgh'[i]}", users=u, aliases=al, rooms=ro, ephemeral=i % 2 == 0)
        for i, (u, al, ro) in enumerate(specs)
    ]
)
room_views = st.builds(
    RoomView,
    st.builds(lambda lp, s: RoomID(f"!{lp}:{s}"), st.sampled_from(["a", "b", "c"]), st.sampled_from(SERVERS)),
    st.frozensets(
        st.builds(lambda lp, s: f"#{lp}:{s}", st.sampled_from(["a", "b_1", "c"]), st.sampled_from(SERVERS)),
        max_size=2,
    ),
    st.frozensets(user_ids, max_size=4),
)
events = st.builds(
    lambda type_, sender, state_key: {"type": type_, "sender": sender, "state_key": state_key},
    st.sampled_from(["m.room.member", "m.room.message"]),
    user_fields,
    user_fields,
)


@settings(max_examples=300, deadline=None)
@given(regs, st.lists(st.tuples(events, room_views, user_ids), min_size=1, max_size=30))
def test_cached_answers_equal_the_naive_reference(
    registrations: list[Registration], queries: list[tuple[dict[str, object], RoomView, str]]
) -> None:
    interest = Interest(registrations, SERVER)

    for ev, room, user in queries * 2:  # the second pass answers from the caches
        assert interest.appservices_for_event(ev, room) == tuple(
            r.id for r in registrations if naive_event(r, ev, room)
        )
        assert interest.appservices_for_room(room) == tuple(r.id for r in registrations if naive_room(r, room))
        assert interest.appservices_for_user(user) == tuple(r.id for r in registrations if naive_user(r, user))
        assert interest.appservices_for_room(room, lambda r: r.receive_ephemeral) == tuple(
            r.id for r in registrations if r.receive_ephemeral and naive_room(r, room)
        )
        for r in registrations:
            assert interest.is_interested(r, ev, room) is naive_event(r, ev, room)
            assert interest.user_is_interesting(r, user) is naive_user(r, user)
            assert interest.room_is_interesting(r, room) is naive_room(r, room)
