"""Loading Synapse-format appservice registration files."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.errors import ConfigError, RegistrationError
from streams.registration import (
    Registration,
    load_registration,
    load_registrations,
    parse_registration,
)

AS_TOKEN = "as-secret-7f3a"
HS_TOKEN = "hs-secret-91bc"

VALID: dict[str, Any] = {
    "id": "irc",
    "url": "http://localhost:9999",
    "as_token": AS_TOKEN,
    "hs_token": HS_TOKEN,
    "sender_localpart": "irc_bot",
    "namespaces": {
        "users": [{"regex": "@irc_.*:example\\.org", "exclusive": True}],
        "aliases": [{"regex": "#irc_.*:example\\.org", "exclusive": False}],
        "rooms": [],
    },
    "protocols": ["irc"],
    "rate_limited": False,
    "receive_ephemeral": True,
    "de.sorunome.msc2409.push_ephemeral": True,
    "org.matrix.msc3202": True,
    "x-unknown-extra": {"anything": 1},
}


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def valid(**changes: object) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    data.update(changes)
    return data


def without(key: str) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    del data[key]
    return data


def with_namespaces(**namespaces: object) -> dict[str, Any]:
    return valid(namespaces=namespaces)


def reject(tmp_path: Path, data: object) -> RegistrationError:
    path = write(tmp_path / "bridge.yaml", data)
    with pytest.raises(RegistrationError) as caught:
        load_registration(path)
    return caught.value


def test_a_valid_full_file_loads_every_field(tmp_path: Path) -> None:
    path = write(tmp_path / "irc.yaml", VALID)

    registration = load_registration(path)

    assert registration.id == "irc"
    assert registration.url == "http://localhost:9999"
    assert registration.as_token == AS_TOKEN
    assert registration.hs_token == HS_TOKEN
    assert registration.sender_localpart == "irc_bot"
    assert [ns.regex for ns in registration.users] == ["@irc_.*:example\\.org"]
    assert [ns.exclusive for ns in registration.users] == [True]
    assert [ns.exclusive for ns in registration.aliases] == [False]
    assert registration.users[0].pattern.match("@irc_alice:example.org")
    assert registration.rooms == ()
    assert registration.protocols == ("irc",)
    assert registration.rate_limited is False
    assert registration.receive_ephemeral is True
    assert registration.push_ephemeral_msc2409 is True
    assert registration.msc3202 is True
    assert registration.source == path


def test_optional_fields_default_when_absent(tmp_path: Path) -> None:
    data = {key: VALID[key] for key in ("id", "url", "as_token", "hs_token", "sender_localpart")}
    data["namespaces"] = {}
    registration = load_registration(write(tmp_path / "min.yaml", data))

    assert (registration.users, registration.aliases, registration.rooms) == (
        (),
        (),
        (),
    )
    assert registration.protocols == ()
    assert registration.rate_limited is None
    assert registration.receive_ephemeral is False
    assert registration.push_ephemeral_msc2409 is False
    assert registration.msc3202 is False
    assert registration.wants_ephemeral is False


def test_optional_fields_written_as_null_mean_not_set(tmp_path: Path) -> None:
    # matrix-appservice-bridge writes `protocols: null`; Synapse accepts it.
    data = valid(protocols=None, rate_limited=None, receive_ephemeral=None)
    registration = load_registration(write(tmp_path / "nulls.yaml", data))

    assert registration.protocols == ()
    assert registration.rate_limited is None
    assert registration.receive_ephemeral is False


def test_url_null_is_accepted_and_means_nothing_is_sent(tmp_path: Path) -> None:
    registration = load_registration(write(tmp_path / "silent.yaml", valid(url=None)))

    assert registration.url is None


@pytest.mark.parametrize(
    ("receive", "push", "expected"),
    [
        (False, False, False),
        (True, False, True),
        (False, True, True),
        (True, True, True),
    ],
)
def test_wants_ephemeral_under_either_key(tmp_path: Path, receive: bool, push: bool, expected: bool) -> None:
    data = valid(receive_ephemeral=receive, **{"de.sorunome.msc2409.push_ephemeral": push})
    registration = load_registration(write(tmp_path / "eph.yaml", data))

    assert registration.wants_ephemeral is expected


def test_user_id_is_sender_localpart_on_the_server(tmp_path: Path) -> None:
    registration = load_registration(write(tmp_path / "irc.yaml", VALID))

    assert registration.user_id("example.org") == "@irc_bot:example.org"


def test_tokens_never_appear_in_repr_or_str(tmp_path: Path) -> None:
    registration = load_registration(write(tmp_path / "irc.yaml", VALID))

    for text in (repr(registration), str(registration)):
        assert AS_TOKEN not in text
        assert HS_TOKEN not in text
        assert "irc_bot" in text


def test_parse_registration_validates_an_already_parsed_document() -> None:
    registration = parse_registration(VALID, Path("inline.yaml"))

    assert isinstance(registration, Registration)
    assert registration.source == Path("inline.yaml")


def test_registration_error_is_a_config_error(tmp_path: Path) -> None:
    assert isinstance(reject(tmp_path, valid(id=None)), ConfigError)


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        *[(without(key), key, "missing") for key in ("id", "as_token", "hs_token")],
        (without("sender_localpart"), "sender_localpart", "missing"),
        *[(valid(**{key: 42}), key, "must be a string") for key in ("id", "as_token", "hs_token")],
        (valid(sender_localpart=["bot"]), "sender_localpart", "must be a string"),
        (valid(id=""), "id", "must not be empty"),
        (valid(sender_localpart=""), "sender_localpart", "must not be empty"),
        (without("url"), "url", "explicit null"),
        (valid(url=8080), "url", "URL string or null"),
        (valid(url=""), "url", "URL string or null"),
        (without("namespaces"), "namespaces", "missing"),
        (valid(namespaces=["users"]), "namespaces", "must be a mapping"),
        (valid(namespaces=None), "namespaces", "must be a mapping"),
        (
            with_namespaces(users={"regex": "@a.*"}),
            "namespaces.users",
            "must be a list",
        ),
        (with_namespaces(aliases="#a.*"), "namespaces.aliases", "must be a list"),
        (with_namespaces(rooms=None), "namespaces.rooms", "must be a list"),
        (with_namespaces(users=["@a.*"]), "namespaces.users[0]", "must be a mapping"),
        (
            with_namespaces(rooms=[{"regex": "!a", "exclusive": True}, {"exclusive": True}]),
            "namespaces.rooms[1].regex",
            "missing",
        ),
        (
            with_namespaces(users=[{"regex": 5, "exclusive": True}]),
            "namespaces.users[0].regex",
            "must be a string",
        ),
        (
            with_namespaces(users=[{"regex": "@a", "exclusive": True}] * 2 + [{"regex": "@(", "exclusive": True}]),
            "namespaces.users[2].regex",
            "missing ), unterminated subpattern",
        ),
        (
            with_namespaces(users=[{"regex": "@(a+)+$", "exclusive": True}]),
            "namespaces.users[0].regex",
            "exponential time",
        ),
        (
            with_namespaces(aliases=[{"regex": "#a.*"}]),
            "namespaces.aliases[0].exclusive",
            "missing",
        ),
        (
            with_namespaces(users=[{"regex": "@a.*", "exclusive": "yes please"}]),
            "namespaces.users[0].exclusive",
            "true or false",
        ),
        (
            with_namespaces(users=[{"regex": "@a.*", "exclusive": 1}]),
            "namespaces.users[0].exclusive",
            "true or false",
        ),
        (valid(sender_localpart="irc bot"), "sender_localpart", "URL-encoding"),
        (valid(sender_localpart="bot@home"), "sender_localpart", "URL-encoding"),
        (valid(id="irc|2"), "id", "'|'"),
        (valid(protocols="irc"), "protocols", "must be a list of strings"),
        (valid(protocols=["irc", 7]), "protocols[1]", "must be a string"),
        *[
            (valid(**{key: "true"}), key, "true or false")
            for key in (
                "rate_limited",
                "receive_ephemeral",
                "de.sorunome.msc2409.push_ephemeral",
                "org.matrix.msc3202",
            )
        ],
    ],
)
def test_invalid_field_is_rejected_naming_file_and_field(tmp_path: Path, data: object, field: str, reason: str) -> None:
    error = reject(tmp_path, data)

    assert error.field == field
    assert "bridge.yaml" in str(error)
    assert f"'{field}'" in str(error)
    assert reason in str(error)


@pytest.mark.parametrize("data", [["id", "irc"], "just a string", None, 3])
def test_top_level_that_is_not_a_mapping_is_rejected(tmp_path: Path, data: object) -> None:
    error = reject(tmp_path, data)

    assert error.field is None
    assert "bridge.yaml" in str(error)
    assert "mapping at top level" in str(error)


def test_invalid_yaml_is_rejected_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("id: irc\nurl: null\nnamespaces: {users: [\n", encoding="utf-8")

    with pytest.raises(RegistrationError) as caught:
        load_registration(path)

    assert caught.value.field is None
    assert "broken.yaml" in str(caught.value)
    assert "line 4" in str(caught.value)


def test_unreadable_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(RegistrationError) as caught:
        load_registration(tmp_path / "absent.yaml")

    assert "absent.yaml" in str(caught.value)
    assert "cannot read" in str(caught.value)


def test_non_utf8_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"id: caf\xe9\n")

    with pytest.raises(RegistrationError, match=r"latin1.yaml.*cannot read"):
        load_registration(path)


def test_rejection_messages_never_contain_a_token(tmp_path: Path) -> None:
    error = reject(tmp_path, valid(url=3))

    assert AS_TOKEN not in str(error)
    assert HS_TOKEN not in str(error)


# --- load_registrations --------------------------------------------------------


def test_directory_loads_yaml_and_yml_sorted_by_file_name(tmp_path: Path) -> None:
    write(tmp_path / "b.yml", valid(id="b", as_token="tb"))
    write(tmp_path / "a.yaml", valid(id="a", as_token="ta"))
    write(tmp_path / "c.yaml", valid(id="c", as_token="tc"))

    registrations = load_registrations(tmp_path)

    assert [r.id for r in registrations] == ["a", "b", "c"]


def test_directory_ignores_other_files_and_subdirectories(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", valid(id="a"))
    (tmp_path / "README.md").write_text("not a registration", encoding="utf-8")
    (tmp_path / "a.yaml.bak").write_text("id: [broken", encoding="utf-8")
    nested = tmp_path / "nested"
    nested.mkdir()
    write(nested / "b.yaml", valid(id="b", as_token="tb"))

    assert [r.id for r in load_registrations(tmp_path)] == ["a"]


def test_missing_directory_is_rejected(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"

    with pytest.raises(RegistrationError, match=r"nowhere.*does not exist") as caught:
        load_registrations(missing)

    assert caught.value.path == missing


def test_a_file_given_as_directory_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path / "irc.yaml", VALID)

    with pytest.raises(RegistrationError, match="not a directory") as caught:
        load_registrations(path)

    assert caught.value.path == path


def test_directory_without_registration_files_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("", encoding="utf-8")

    with pytest.raises(RegistrationError, match="no registration files") as caught:
        load_registrations(tmp_path)

    assert caught.value.path == tmp_path


def test_an_invalid_file_in_the_directory_is_rejected_by_name(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", valid(id="a"))
    write(tmp_path / "b.yaml", without("hs_token"))

    with pytest.raises(RegistrationError, match=r"b.yaml: field 'hs_token'"):
        load_registrations(tmp_path)


def test_same_id_in_two_files_is_rejected_naming_both(tmp_path: Path) -> None:
    write(tmp_path / "first.yaml", valid(id="irc", as_token="t1"))
    write(tmp_path / "second.yaml", valid(id="irc", as_token="t2"))

    with pytest.raises(RegistrationError) as caught:
        load_registrations(tmp_path)

    assert caught.value.field == "id"
    assert "first.yaml" in str(caught.value)
    assert "second.yaml" in str(caught.value)


def test_same_as_token_in_two_files_is_rejected_without_printing_it(
    tmp_path: Path,
) -> None:
    write(tmp_path / "first.yaml", valid(id="one"))
    write(tmp_path / "second.yaml", valid(id="two"))

    with pytest.raises(RegistrationError) as caught:
        load_registrations(tmp_path)

    assert caught.value.field == "as_token"
    assert "first.yaml" in str(caught.value)
    assert "second.yaml" in str(caught.value)
    assert AS_TOKEN not in str(caught.value)
