"""The ingest's pure core: one appservice transaction → input-envelope records, and its dedup rule.

A homeserver registers the ingest as one "firehose" appservice and PUTs it
transactions (``PUT /_matrix/app/v1/transactions/{txnId}``). ``records_of``
turns one body into the records ``streams.envelope`` defines, each as
``(key, value)`` bytes, in the body's order:

=============================================  ==============  ==================
body key                                       envelope kind   key
=============================================  ==============  ==================
``events``                                     ``event``       room ID
``ephemeral`` / ``de.sorunome.msc2409.…``      ``ephemeral``   room (typing,
                                                               receipt) or user
                                                               (presence)
``to_device`` / ``de.sorunome.msc2409.…``      ``to_device``   recipient
``org.matrix.msc3202.device_lists``            ``device_lists`` user
``…device_one_time_keys_count`` (and           ``device_keys``  user
Synapse's ``…device_one_time_key_counts``),
``…device_unused_fallback_key_types``
=============================================  ==============  ==================

A homeserver may send one list under both the stable and the unstable name
(Synapse does for ephemeral data): it is taken once. Were the two lists to
differ, the stable one is taken, then the unstable one's items it lacks.
EDU types the envelope does not carry (anything but typing, receipts and
presence) are skipped and reported, not refused: refusing would make the
homeserver retry the transaction forever.

The dedup rule (``decide``): a homeserver keeps one transaction in flight
per appservice, so a retry always carries the last id it sent. The ingest
stores the last id it produced with a digest of its body; the same id with
the same digest is a retry, answered without producing. Anything else is
produced, including an id at or below the last one with another body
(Synapse on SQLite can reset its counter, synapse#14556), which is flagged
so the shell can warn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams import envelope
from streams.errors import BadRecord, BadTransaction, NotJSON
from streams.matrix import (
    DEVICE_LISTS_MSC3202,
    EPHEMERAL,
    EPHEMERAL_MSC2409,
    EVENTS,
    FALLBACK_KEYS_MSC3202,
    OTK_COUNT_MSC3202,
    OTK_COUNT_MSC3202_SYNAPSE,
    TO_DEVICE,
    TO_DEVICE_MSC2409,
)

Record = tuple[bytes, bytes]  # (key, value) of one input-topic record
POSITION_VERSION = 1


@dataclass(frozen=True)
class Ingested:
    """What one transaction body becomes."""

    records: list[Record]
    skipped: list[str] = field(default_factory=list)  # items not carried, each with why


def parse_body(raw: bytes) -> dict[str, Any]:
    """The transaction body as a JSON object.

    Raises:
        NotJSON: ``raw`` is not UTF-8 JSON.
        BadTransaction: it is JSON, but not an object.
    """
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise NotJSON(f"body is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadTransaction("body is not a JSON object")
    return doc


def _list(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name, [])
    if not isinstance(value, list):
        raise BadTransaction("must be a list", field=name)
    return value


def _one_list(body: dict[str, Any], stable: str, unstable: str) -> list[tuple[str, Any]]:
    """Items of a list sent under a stable and/or unstable name, each once, with its body path."""
    first = [(f"{stable}[{n}]", item) for n, item in enumerate(_list(body, stable))]
    seen = [item for _, item in first]
    rest = [(f"{unstable}[{n}]", item) for n, item in enumerate(_list(body, unstable)) if item not in seen]
    return first + rest


def _checked(kind: str, where: str, inner: str, **fields: Any) -> Record:
    """Encode one envelope and validate it as the router will, so nothing produced is dead-lettered there.

    Raises:
        BadTransaction: the item breaks the envelope's rules; ``field`` is the
            body path (``events[3].room_id``).
    """
    value = envelope.encode(kind, **fields)
    try:
        record = envelope.decode(value)
    except BadRecord as exc:
        path = exc.field or ""
        path = path[len(inner) + 1 :] if path.startswith(inner + ".") else path
        raise BadTransaction(exc.reason, field=f"{where}.{path}" if path else where) from exc
    return envelope.record_key(record).encode(), value


def _events(body: dict[str, Any]) -> Iterator[Record]:
    for n, event in enumerate(_list(body, EVENTS)):
        if not isinstance(event, dict):
            raise BadTransaction("must be a JSON object", field=f"{EVENTS}[{n}]")
        yield _checked("event", f"{EVENTS}[{n}]", "event", event=event)


def _ephemeral(body: dict[str, Any], skipped: list[str]) -> Iterator[Record]:
    for where, edu in _one_list(body, EPHEMERAL, EPHEMERAL_MSC2409):
        if not isinstance(edu, dict):
            raise BadTransaction("must be a JSON object", field=where)
        edu_type = edu.get("type")
        if not isinstance(edu_type, str):
            raise BadTransaction("missing or not a string", field=f"{where}.type")
        if edu_type not in (*envelope.ROOM_EDUS, envelope.PRESENCE):
            skipped.append(f"{where}: EDU type {edu_type!r} is not carried")
            continue
        yield _checked("ephemeral", where, "edu", edu=edu)


def _to_device(body: dict[str, Any]) -> Iterator[Record]:
    for where, message in _one_list(body, TO_DEVICE, TO_DEVICE_MSC2409):
        if not isinstance(message, dict):
            raise BadTransaction("must be a JSON object", field=where)
        yield _checked("to_device", where, "message", message=message)


def _device_lists(body: dict[str, Any]) -> Iterator[Record]:
    lists = body.get(DEVICE_LISTS_MSC3202, {})
    if not isinstance(lists, dict):
        raise BadTransaction("must be a JSON object", field=DEVICE_LISTS_MSC3202)
    for change in ("changed", "left"):
        where = f"{DEVICE_LISTS_MSC3202}.{change}"
        users = lists.get(change, [])
        if not isinstance(users, list):
            raise BadTransaction("must be a list", field=where)
        for n, user_id in enumerate(users):
            if not isinstance(user_id, str) or not user_id:
                raise BadTransaction("must be a user ID", field=f"{where}[{n}]")
            yield _checked("device_lists", f"{where}[{n}]", "", user_id=user_id, change=change)


def _per_device(body: dict[str, Any], name: str) -> dict[tuple[str, str], Any]:
    """``{user: {device: value}}`` flattened to ``{(user, device): value}``, in order."""
    doc = body.get(name, {})
    if not isinstance(doc, dict):
        raise BadTransaction("must be a JSON object", field=name)
    flat: dict[tuple[str, str], Any] = {}
    for user_id, devices in doc.items():
        if not isinstance(devices, dict):
            raise BadTransaction("must map device IDs to values", field=f"{name}[{user_id}]")
        for device_id, value in devices.items():
            flat[(user_id, device_id)] = value
    return flat


def _device_keys(body: dict[str, Any]) -> Iterator[Record]:
    counts = {**_per_device(body, OTK_COUNT_MSC3202_SYNAPSE), **_per_device(body, OTK_COUNT_MSC3202)}
    fallback = _per_device(body, FALLBACK_KEYS_MSC3202)
    for user_id, device_id in {**counts, **fallback}:
        fields: dict[str, Any] = {"user_id": user_id, "device_id": device_id}
        if (user_id, device_id) in counts:
            fields["one_time_keys_count"] = counts[(user_id, device_id)]
        if (user_id, device_id) in fallback:
            fields["unused_fallback_key_types"] = fallback[(user_id, device_id)]
        yield _checked("device_keys", f"device keys of {user_id} {device_id}", "", **fields)


def records_of(body: dict[str, Any], room_events: bool = True) -> Ingested:
    """The input-topic records of one transaction body, in the body's order (events first).

    ``room_events=False`` leaves the body's ``events`` out (not even checked):
    for an ingest beside the Synapse feed module, which publishes room events
    itself, so that each room event is on the topic once.

    Raises:
        BadTransaction: a key holds the wrong type, or an item lacks what the
            envelope requires; ``field`` names the body path. Nothing of the
            body is returned then: a transaction is produced whole or not at all.
    """
    skipped: list[str] = []
    records = [
        *(_events(body) if room_events else ()),
        *_ephemeral(body, skipped),
        *_to_device(body),
        *_device_lists(body),
        *_device_keys(body),
    ]
    return Ingested(records, skipped)


# ---------------------------------------------------------------------------- registration


def firehose_registration(
    appservice_id: str, url: str, as_token: str, hs_token: str, claim_users: str | None = None
) -> dict[str, Any]:
    """The homeserver-side registration of the ingest (Synapse's YAML format, as a mapping).

    Every room (``!.*``, not exclusive), typing and receipts of every room,
    MSC2409/MSC3202 data. No users namespace unless ``claim_users`` is given:
    a users regex lets the ``as_token`` act as every local user it matches.
    Tokens are inputs (the CLI draws them with ``secrets``).
    """
    return {
        "id": appservice_id,
        "url": url,
        "as_token": as_token,
        "hs_token": hs_token,
        "sender_localpart": appservice_id,
        "rate_limited": False,
        "namespaces": {
            "users": [] if claim_users is None else [{"regex": claim_users, "exclusive": False}],
            "aliases": [],
            "rooms": [{"regex": "!.*", "exclusive": False}],
        },
        "receive_ephemeral": True,
        "de.sorunome.msc2409.push_ephemeral": True,
        "org.matrix.msc3202": True,
    }


# ---------------------------------------------------------------------------- positions


@dataclass(frozen=True)
class Position:
    """The last transaction the ingest produced: its id, the SHA-256 of its body, and of its events' IDs.

    ``events``: the SHA-256 of the event IDs of its ``events``, in order, one per line (None when a
    previous release stored the position, or when the body has no readable event list). It lets a
    homeserver's retry be told apart from new content: Synapse resends a transaction's events under
    the same id, but not byte for byte (each event's ``unsigned.age`` is computed at every attempt, and
    ephemeral data is not stored for a retry).
    """

    txn_id: str
    digest: str
    events: str | None = None

    @classmethod
    def of(cls, txn_id: str, raw_body: bytes, body: Any = None) -> Position:
        """``body``: ``raw_body`` already parsed (the ingest has it, from ``parse_body``); parsed here if None."""
        if body is None:
            try:
                body = orjson.loads(raw_body)
            except orjson.JSONDecodeError:
                body = None
        return cls(txn_id, hashlib.sha256(raw_body).hexdigest(), _events_digest(body))


def _events_digest(body: Any) -> str | None:
    try:
        events = body.get("events", [])
        ids = [event["event_id"] for event in events]
    except (AttributeError, TypeError, KeyError):
        return None
    if not all(isinstance(event_id, str) for event_id in ids):
        return None
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def encode_position(position: Position) -> bytes:
    """``{"v": 1, "txn_id": "…", "sha256": "<hex>", "events_sha256": "<hex>"}``: the value stored under the ingest's id.

    ``events_sha256`` is left out when not known; a previous release reads the value and ignores it.
    """
    doc: dict[str, Any] = {"v": POSITION_VERSION, "txn_id": position.txn_id, "sha256": position.digest}
    if position.events is not None:
        doc["events_sha256"] = position.events
    return orjson.dumps(doc)


def decode_position(raw: bytes) -> Position:
    """Raises: BadRecord, the stored value is not a version-1 position."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRecord(f"position is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("v") != POSITION_VERSION:
        raise BadRecord("not a version-1 ingest position", field="v")
    txn_id, digest, events = doc.get("txn_id"), doc.get("sha256"), doc.get("events_sha256")
    if not isinstance(txn_id, str) or not isinstance(digest, str):
        raise BadRecord("missing or not a string", field="txn_id" if not isinstance(txn_id, str) else "sha256")
    if events is not None and not isinstance(events, str):
        raise BadRecord("not a string", field="events_sha256")
    return Position(txn_id, digest, events)


@dataclass(frozen=True)
class Retry:
    """The last transaction again: answer 200, produce nothing."""


@dataclass(frozen=True)
class Produce:
    """A new transaction. ``went_back``: its id is not above the last one's (a counter reset)."""

    went_back: bool = False


def decide(last: Position | None, incoming: Position) -> Retry | Produce:
    """Whether a transaction is a retry of the last one produced, or new."""
    if last is None:
        return Produce()
    if incoming.txn_id == last.txn_id and (
        incoming.digest == last.digest or (incoming.events is not None and incoming.events == last.events)
    ):
        return Retry()  # the same body, or the same events resent (the homeserver never saw our 200)
    went_back = incoming.txn_id.isdecimal() and last.txn_id.isdecimal() and int(incoming.txn_id) <= int(last.txn_id)
    return Produce(went_back=went_back)
