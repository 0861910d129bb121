"""Appservice registration files, in Synapse's YAML format.

This module only parses and validates; the one I/O it does is reading the
files it is pointed at. Every rejection is a ``RegistrationError`` naming the
file and the field at fault, worded so an operator can fix the file without
reading this code. Tokens are never part of a message or a ``repr``.

Accepted, as Synapse accepts them: unknown extra keys, and ``null`` for an
optional key (it means "not set"). ``url`` is required but may be an explicit
``null``: the appservice is registered and nothing is ever sent to it.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from streams.errors import RegistrationError
from streams.matrix import REG_MSC3202, REG_PUSH_EPHEMERAL_MSC2409, AppserviceID, UserID
from streams.regex_safety import nested_repetition

REGISTRATION_SUFFIXES = (".yaml", ".yml")
NAMESPACE_KINDS = ("users", "aliases", "rooms")
REQUIRED_STRINGS = ("id", "as_token", "hs_token", "sender_localpart")
OPTIONAL_BOOLS = (
    "rate_limited",
    "receive_ephemeral",
    REG_PUSH_EPHEMERAL_MSC2409,
    REG_MSC3202,
)


@dataclass(frozen=True, slots=True)
class Namespace:
    """One ``{regex, exclusive}`` entry; match with ``pattern.match`` (anchored at the start)."""

    regex: str
    pattern: re.Pattern[str]
    exclusive: bool


@dataclass(frozen=True, slots=True)
class Registration:
    """A validated appservice registration. Tokens are left out of ``repr``."""

    id: AppserviceID
    url: str | None
    as_token: str = field(repr=False)
    hs_token: str = field(repr=False)
    sender_localpart: str
    users: tuple[Namespace, ...]
    aliases: tuple[Namespace, ...]
    rooms: tuple[Namespace, ...]
    protocols: tuple[str, ...]
    rate_limited: bool | None
    receive_ephemeral: bool
    push_ephemeral_msc2409: bool
    msc3202: bool
    source: Path

    def user_id(self, server_name: str) -> UserID:
        """The appservice's own user, ``@<sender_localpart>:<server_name>``."""
        return UserID(f"@{self.sender_localpart}:{server_name}")

    @property
    def wants_ephemeral(self) -> bool:
        """Whether typing, receipts and presence are sent (under either body key)."""
        return self.receive_ephemeral or self.push_ephemeral_msc2409


_TYPE_NAMES: dict[type, str] = {
    type(None): "null",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}


def _type_name(value: object) -> str:
    """How YAML would call ``value``'s type, for error messages (never the value)."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _required_string(data: Mapping[str, object], key: str, source: Path) -> str:
    if key not in data:
        raise RegistrationError(source, key, "is required but missing")
    value = data[key]
    if not isinstance(value, str):
        raise RegistrationError(source, key, f"must be a string, got {_type_name(value)}")
    if not value:
        raise RegistrationError(source, key, "must not be empty")
    return value


def _optional_bool(data: Mapping[str, object], key: str, source: Path) -> bool | None:
    value = data.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise RegistrationError(source, key, f"must be true or false, got {_type_name(value)}")


def _parse_namespace(entry: object, where: str, source: Path) -> Namespace:
    if not isinstance(entry, Mapping):
        raise RegistrationError(
            source,
            where,
            f"must be a mapping with 'regex' and 'exclusive', got {_type_name(entry)}",
        )
    if "regex" not in entry:
        raise RegistrationError(source, f"{where}.regex", "is required but missing")
    regex = entry["regex"]
    if not isinstance(regex, str):
        raise RegistrationError(source, f"{where}.regex", f"must be a string, got {_type_name(regex)}")
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise RegistrationError(
            source,
            f"{where}.regex",
            f"is not a valid regular expression ({exc}): {regex!r}",
        ) from exc
    if nested_repetition(regex):
        raise RegistrationError(
            source,
            f"{where}.regex",
            f"repeats a repetition without bound ({regex!r}): matching can take exponential time on some IDs "
            "and stall the worker; rewrite it without the nesting (e.g. '(a+)+' as 'a+')",
        )
    if "exclusive" not in entry:
        raise RegistrationError(source, f"{where}.exclusive", "is required but missing (true or false)")
    exclusive = entry["exclusive"]
    if not isinstance(exclusive, bool):
        raise RegistrationError(
            source,
            f"{where}.exclusive",
            f"must be true or false, got {_type_name(exclusive)}",
        )
    return Namespace(regex=regex, pattern=pattern, exclusive=exclusive)


def _parse_namespaces(data: Mapping[str, object], source: Path) -> dict[str, tuple[Namespace, ...]]:
    if "namespaces" not in data:
        raise RegistrationError(source, "namespaces", "is required but missing")
    namespaces = data["namespaces"]
    if not isinstance(namespaces, Mapping):
        raise RegistrationError(
            source,
            "namespaces",
            f"must be a mapping of users/aliases/rooms, got {_type_name(namespaces)}",
        )
    result: dict[str, tuple[Namespace, ...]] = {}
    for kind in NAMESPACE_KINDS:
        entries = namespaces.get(kind, [])
        if not isinstance(entries, list):
            raise RegistrationError(
                source,
                f"namespaces.{kind}",
                f"must be a list, got {_type_name(entries)}",
            )
        result[kind] = tuple(
            _parse_namespace(entry, f"namespaces.{kind}[{index}]", source) for index, entry in enumerate(entries)
        )
    return result


def _parse_protocols(data: Mapping[str, object], source: Path) -> tuple[str, ...]:
    protocols = data.get("protocols")
    if protocols is None:
        return ()
    if not isinstance(protocols, list):
        raise RegistrationError(
            source,
            "protocols",
            f"must be a list of strings, got {_type_name(protocols)}",
        )
    for index, protocol in enumerate(protocols):
        if not isinstance(protocol, str):
            raise RegistrationError(
                source,
                f"protocols[{index}]",
                f"must be a string, got {_type_name(protocol)}",
            )
    return tuple(protocols)


def parse_registration(data: object, source: Path) -> Registration:
    """Validate one parsed YAML document; ``source`` is named in every error.

    Raises:
        RegistrationError: a required field is missing, a field has the wrong
            type, a regex does not compile, ``sender_localpart`` needs
            URL-encoding or ``id`` contains ``|``.
    """
    if not isinstance(data, Mapping):
        raise RegistrationError(
            source,
            None,
            f"the file must contain a YAML mapping at top level, got {_type_name(data)}",
        )
    strings = {key: _required_string(data, key, source) for key in REQUIRED_STRINGS}
    if "|" in strings["id"]:
        raise RegistrationError(source, "id", f"must not contain '|': {strings['id']!r}")
    localpart = strings["sender_localpart"]
    if urllib.parse.quote(localpart) != localpart:
        raise RegistrationError(
            source,
            "sender_localpart",
            f"{localpart!r} contains characters that URL-encoding would change; use only letters, digits and - . _ ~ /",
        )
    if "url" not in data:
        raise RegistrationError(
            source,
            "url",
            "is required: give the appservice's URL, or an explicit null to send nothing",
        )
    url = data["url"]
    if url is not None and (not isinstance(url, str) or not url):
        raise RegistrationError(
            source,
            "url",
            f"must be a non-empty URL string or null, got {_type_name(url)}",
        )
    namespaces = _parse_namespaces(data, source)
    protocols = _parse_protocols(data, source)
    bools = {key: _optional_bool(data, key, source) for key in OPTIONAL_BOOLS}
    return Registration(
        id=AppserviceID(strings["id"]),
        url=url,
        as_token=strings["as_token"],
        hs_token=strings["hs_token"],
        sender_localpart=localpart,
        users=namespaces["users"],
        aliases=namespaces["aliases"],
        rooms=namespaces["rooms"],
        protocols=protocols,
        rate_limited=bools["rate_limited"],
        receive_ephemeral=bool(bools["receive_ephemeral"]),
        push_ephemeral_msc2409=bool(bools[REG_PUSH_EPHEMERAL_MSC2409]),
        msc3202=bool(bools[REG_MSC3202]),
        source=source,
    )


def load_registration(path: Path) -> Registration:
    """Read and validate one registration file.

    Raises:
        RegistrationError: the file cannot be read, is not YAML (the message
            gives the line), or is not a valid registration.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise RegistrationError(path, None, f"cannot read the file: {reason}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistrationError(path, None, _describe_yaml_error(exc)) from exc
    return parse_registration(data, path)


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        return f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return f"not valid YAML: {exc}"


def load_registrations(directory: Path) -> tuple[Registration, ...]:
    """Load every ``*.yaml`` and ``*.yml`` file directly in ``directory``, sorted by file name.

    Raises:
        RegistrationError: the directory is missing, is not a directory or has
            no registration file; any file is invalid; two files share an
            ``id`` or an ``as_token`` (both files are named, the token never).
    """
    if not directory.exists():
        raise RegistrationError(directory, None, "the registration directory does not exist")
    if not directory.is_dir():
        raise RegistrationError(directory, None, "is not a directory of registration files")
    paths = sorted(
        (p for p in directory.iterdir() if p.suffix in REGISTRATION_SUFFIXES and not p.is_dir()),
        key=lambda p: p.name,
    )
    if not paths:
        raise RegistrationError(directory, None, "contains no registration files (*.yaml, *.yml)")
    registrations: list[Registration] = []
    by_id: dict[str, Path] = {}
    by_as_token: dict[str, Path] = {}
    for path in paths:
        registration = load_registration(path)
        if registration.id in by_id:
            raise RegistrationError(
                path,
                "id",
                f"{registration.id!r} is also the id in {by_id[registration.id]}; ids must be unique",
            )
        if registration.as_token in by_as_token:
            raise RegistrationError(
                path,
                "as_token",
                f"is the same as_token as in {by_as_token[registration.as_token]}; "
                "every appservice needs its own as_token",
            )
        by_id[registration.id] = path
        by_as_token[registration.as_token] = path
        registrations.append(registration)
    return tuple(registrations)
