"""Which appservices get which event (reference section 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.interest import ROOM_CACHE_SIZE, Interest, RoomView
from streams.matrix import AppserviceID, RoomID
from streams.registration import Registration, parse_registration

SERVER = "example.org"
ROOM = RoomID("!room:example.org")


def registration(
    as_id: str = "irc",
    *,
    users: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
    rooms: tuple[str, ...] = (),
    exclusive: bool = True,
) -> Registration:
    def namespace(regexes: tuple[str, ...]) -> list[dict[str, object]]:
        return [{"regex": regex, "exclusive": exclusive} for regex in regexes]

    data = {
        "id": as_id,
        "url": None,
        "as_token": f"as-{as_id}",
        "hs_token": f"hs-{as_id}",
        "sender_localpart": f"{as_id}_bot",
        "namespaces": {
            "users": namespace(users),
            "aliases": namespace(aliases),
            "rooms": namespace(rooms),
        },
    }
    return parse_registration(data, Path(f"{as_id}.yaml"))


IRC = registration(
    "irc",
    users=(r"@irc_.*:example\.org",),
    aliases=(r"#irc_.*:example\.org",),
    rooms=(r"!irc[a-z]*:example\.org",),
)


def message(sender: object = "@alice:example.org", **fields: object) -> dict[str, object]:
    return {"type": "m.room.message", "sender": sender, "room_id": ROOM, **fields}


def member(state_key: object, sender: str = "@alice:example.org") -> dict[str, object]:
    return message(sender, type="m.room.member", state_key=state_key)


def wants(event: dict[str, object], room: RoomView | None = None, reg: Registration = IRC) -> bool:
    return Interest([reg], SERVER).is_interested(reg, event, room or RoomView(ROOM))


# --- rule 1: sender ------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("@irc_bot:example.org", True),  # the AS's own user
        ("@irc_alice:example.org", True),  # users namespace
        ("@alice:example.org", False),
    ],
)
def test_sender_is_the_as_user_or_in_users_namespace(sender: str, expected: bool) -> None:
    assert wants(message(sender)) is expected


def test_remote_sender_matching_users_regex_counts() -> None:
    reg = registration("remote", users=(r"@irc_.*",))

    assert wants(message("@irc_alice:elsewhere.net"), reg=reg) is True


def test_regex_matching_only_mid_string_does_not_match() -> None:
    reg = registration("mid", users=(r"irc_.*",), aliases=(r"irc_",), rooms=(r"irc",))
    room = RoomView(
        RoomID("!irc:example.org"),
        local_aliases=frozenset({"#irc_x:example.org"}),
        local_members=frozenset({"@irc_x:example.org"}),
    )

    assert wants(message("@irc_alice:example.org"), room, reg=reg) is False


def test_regex_is_anchored_at_start_only_not_at_end() -> None:
    reg = registration("prefix", users=(r"@irc_",))

    assert wants(message("@irc_alice:example.org:extra"), reg=reg) is True


# --- rule 2: m.room.member state_key ---------------------------------------------


@pytest.mark.parametrize(
    ("state_key", "expected"),
    [
        ("@irc_bot:example.org", True),
        ("@irc_bob:example.org", True),
        ("@bob:example.org", False),
    ],
)
def test_membership_of_an_interesting_user_is_interesting(state_key: str, expected: bool) -> None:
    assert wants(member(state_key)) is expected


def test_state_key_only_counts_for_member_events() -> None:
    assert wants(message(type="m.room.topic", state_key="@irc_bob:example.org")) is False


# --- rules 3-5: the room ---------------------------------------------------------


def test_room_id_matching_rooms_namespace_is_interesting() -> None:
    assert wants(message(room_id="!ircabc:example.org"), RoomView(RoomID("!ircabc:example.org")))


def test_local_alias_matching_aliases_namespace_is_interesting() -> None:
    room = RoomView(ROOM, local_aliases=frozenset({"#general:example.org", "#irc_x:example.org"}))

    assert wants(message(), room) is True


def test_remote_alias_never_makes_a_room_interesting() -> None:
    reg = registration("anyalias", aliases=(r"#irc_.*",))
    room = RoomView(ROOM, local_aliases=frozenset({"#irc_x:elsewhere.net"}))

    assert wants(message(), room, reg=reg) is False


@pytest.mark.parametrize(
    "local_member",
    ["@irc_bot:example.org", "@irc_carol:example.org"],
    ids=["as-user", "users-namespace"],
)
def test_local_joined_member_makes_the_room_interesting(local_member: str) -> None:
    room = RoomView(ROOM, local_members=frozenset({"@alice:example.org", local_member}))

    assert wants(message(), room) is True


def test_remote_members_never_make_a_room_interesting() -> None:
    reg = registration("anyuser", users=(r"@irc_.*",))
    room = RoomView(ROOM, local_members=frozenset({"@irc_x:elsewhere.net"}))

    assert wants(message(), room, reg=reg) is False


def test_the_as_user_of_another_server_is_not_a_local_member() -> None:
    room = RoomView(ROOM, local_members=frozenset({"@irc_bot:elsewhere.net"}))

    assert wants(message(), room, reg=registration("irc")) is False


def test_room_without_matches_is_not_interesting() -> None:
    room = RoomView(
        ROOM,
        local_aliases=frozenset({"#general:example.org"}),
        local_members=frozenset({"@alice:example.org", "@bob:example.org"}),
    )

    assert wants(message(), room) is False


@pytest.mark.parametrize("exclusive", [True, False])
def test_exclusive_does_not_change_delivery(exclusive: bool) -> None:
    reg = registration("ex", users=(r"@irc_.*",), exclusive=exclusive)

    assert wants(message("@irc_a:example.org"), reg=reg) is True


# --- malformed events --------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"sender": None, "type": "m.room.member", "state_key": None},
        {"sender": 42, "type": "m.room.member", "state_key": ["@irc_x:example.org"]},
        {"sender": {"user": "@irc_x:example.org"}},
    ],
    ids=["empty", "nulls", "wrong-types", "nested"],
)
def test_missing_or_non_string_fields_never_match_and_never_raise(
    event: dict[str, object],
) -> None:
    assert wants(event) is False


# --- many appservices ----------------------------------------------------------------


def test_event_matching_two_appservices_goes_to_both_in_registration_order() -> None:
    regs = [
        registration("zeta", users=(r"@irc_.*",)),
        registration("alpha", users=(r"@nobody",)),
        registration("beta", rooms=(r"!room:",)),
    ]
    interest = Interest(regs, SERVER)

    result = interest.appservices_for_event(message("@irc_a:example.org"), RoomView(ROOM))

    assert result == (AppserviceID("zeta"), AppserviceID("beta"))


def test_event_nobody_wants_goes_nowhere() -> None:
    interest = Interest([IRC, registration("other")], SERVER)

    assert interest.appservices_for_event(message(), RoomView(ROOM)) == ()


# --- helpers used for ephemeral data ----------------------------------------------------


@pytest.mark.parametrize(
    ("user_id", "expected"),
    [
        ("@irc_bot:example.org", True),
        ("@irc_x:example.org", True),
        ("@irc_x:elsewhere.net", False),  # IRC's users regex names the server
        ("@alice:example.org", False),
    ],
)
def test_user_is_interesting(user_id: str, expected: bool) -> None:
    assert Interest([IRC], SERVER).user_is_interesting(IRC, user_id) is expected


@pytest.mark.parametrize(
    ("room", "expected"),
    [
        (RoomView(RoomID("!ircx:example.org")), True),
        (RoomView(ROOM, local_aliases=frozenset({"#irc_a:example.org"})), True),
        (RoomView(ROOM, local_members=frozenset({"@irc_a:example.org"})), True),
        (RoomView(ROOM, local_members=frozenset({"@alice:example.org"})), False),
    ],
    ids=["room-id", "alias", "member", "none"],
)
def test_room_is_interesting_uses_rules_3_to_5(room: RoomView, expected: bool) -> None:
    assert Interest([IRC], SERVER).room_is_interesting(IRC, room) is expected


def test_room_is_interesting_ignores_who_sent_what() -> None:
    # The same room is not interesting on its own even though an IRC user could send in it.
    assert Interest([IRC], SERVER).room_is_interesting(IRC, RoomView(ROOM)) is False


def test_registration_not_given_to_the_constructor_is_still_answered() -> None:
    other = registration("late", users=(r"@late_",))

    assert Interest([IRC], SERVER).user_is_interesting(other, "@late_x:example.org") is True


# --- the room cache (rules 3-5) -----------------------------------------------------


def test_member_answer_follows_membership_changes() -> None:
    interest = Interest([IRC], SERVER)
    before = RoomView(ROOM, local_members=frozenset({"@alice:example.org"}))
    after = RoomView(ROOM, local_members=before.local_members | {"@irc_a:example.org"})

    assert interest.room_is_interesting(IRC, before) is False
    assert interest.room_is_interesting(IRC, after) is True
    assert interest.room_is_interesting(IRC, before) is False


def test_member_cache_stays_bounded_and_correct() -> None:
    interest = Interest([IRC], SERVER)
    rooms = [RoomView(ROOM, local_members=frozenset({f"@user{i}:example.org"})) for i in range(ROOM_CACHE_SIZE * 2 + 3)]

    answers = {interest.room_is_interesting(IRC, room) for room in rooms}

    assert answers == {False}
    assert len(interest._rooms) <= ROOM_CACHE_SIZE
