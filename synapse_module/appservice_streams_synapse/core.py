"""The module's pure decisions: its config, the client format of a stored event, envelope records.

No I/O and no Synapse import, so the worker's test suite checks it. The
client format is the one Synapse's own appservice sender sends
(``synapse/appservice/api.py`` ``_serialize``: ``as_client_event=True``,
``EventFormat.ClientV1``, stripped room state and admin metadata included),
rebuilt from the stored PDU JSON (``event_json.json``):

* the PDU's keys minus the federation ones (``auth_events``, ``prev_events``,
  ``hashes``, ``signatures``, ``depth``, ``origin``, ``prev_state``), plus
  ``event_id`` and ``room_id`` from the ``events`` row (room versions 3+
  carry no ``event_id`` in the JSON, version 12's create event no room ID);
* ``unsigned``: ``age`` (now - stored ``age_ts``), ``replaces_state``,
  ``prev_content`` and ``prev_sender`` (from the replaced state event),
  ``invite_room_state`` / ``knock_room_state``, ``redacted_because`` /
  ``redacted_by``, and Synapse's ``io.element.synapse.soft_failed`` /
  ``…policy_server_spammy`` admin flags from the internal metadata;
* the legacy (v1) top-level copies: ``age``, ``user_id`` (= sender),
  ``replaces_state``, ``prev_content``, ``invite_room_state``,
  ``knock_room_state``, ``redacted_because``; and top-level ``redacts`` for
  a redaction whose room version moved it into ``content``.

A redacted event's content is pruned with the redaction rules of room
version 11 (the latest: the keys each event type keeps); earlier room
versions keep a subset of those keys, so older rooms may keep a key or two
Synapse would strip.

Envelope records follow ``streams/envelope.py`` version 1 (``event``,
``room_aliases``, ``room_members``), keyed by room ID.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ENVELOPE_VERSION = 1
FEDERATION_KEYS = frozenset({"auth_events", "prev_events", "hashes", "signatures", "depth", "origin", "prev_state"})
V1_TOP_LEVEL = ("age", "replaces_state", "prev_content", "invite_room_state", "knock_room_state", "redacted_because")
STORED_UNSIGNED = ("replaces_state", "invite_room_state", "knock_room_state")
ADMIN_FLAGS = {
    "soft_failed": "io.element.synapse.soft_failed",
    "policy_server_spammy": "io.element.synapse.policy_server_spammy",
}
# Room version 11's redaction algorithm: the content keys each type keeps (m.room.create keeps all).
REDACTION_KEEPS: dict[str, frozenset[str]] = {
    "m.room.member": frozenset({"membership", "join_authorised_via_users_server", "third_party_invite"}),
    "m.room.join_rules": frozenset({"join_rule", "allow"}),
    "m.room.power_levels": frozenset(
        {"ban", "events", "events_default", "invite", "kick", "redact", "state_default", "users", "users_default"}
    ),
    "m.room.history_visibility": frozenset({"history_visibility"}),
    "m.room.redaction": frozenset({"redacts"}),
}
# librdkafka settings the feed's guarantees rest on: an operator's `kafka:` may not change them.
FIXED_PRODUCER = {"acks": "all", "enable.idempotence": True, "partitioner": "murmur2_random"}

Record = tuple[bytes, bytes]  # (key, value) on the input topic


@dataclass(frozen=True)
class FeedConfig:
    """The ``config:`` block of the module in ``homeserver.yaml``."""

    bootstrap_servers: str
    topic: str = "matrix.events"
    worker_name: str | None = None  # the ONE instance that publishes; None = the main process
    batch_size: int = 100  # events per read, produce and flush; the duplicate window after a crash
    feed_id: str = ""  # the row of the position table; defaults to the topic
    poll_interval_s: float = 1.0  # a safety net beside on_new_event: also picks up a backfill
    aliases_interval_s: float = 60.0  # how often room_aliases is read for changes
    delivery_timeout_s: float = 60.0  # librdkafka message.timeout.ms: a batch is delivered or failed by then
    kafka: Mapping[str, Any] = field(default_factory=dict)  # more librdkafka settings (security.protocol, sasl.*)

    @property
    def position_key(self) -> str:
        return self.feed_id or self.topic


def parse_config(doc: Mapping[str, Any] | None) -> FeedConfig:
    """Check the module's config.

    Raises:
        ValueError: a missing or mistyped field (named in the message), or a
            ``kafka`` setting that would break ordering or durability.
    """
    doc = dict(doc or {})
    known = set(FeedConfig.__dataclass_fields__)
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ValueError(f"appservice_streams_synapse: unknown config field(s) {unknown}")
    servers = doc.get("bootstrap_servers")
    if not isinstance(servers, str) or not servers:
        raise ValueError("appservice_streams_synapse: 'bootstrap_servers' must be a non-empty string")
    for name in ("topic", "feed_id"):
        if name in doc and not isinstance(doc[name], str):
            raise ValueError(f"appservice_streams_synapse: '{name}' must be a string")
    if doc.get("worker_name") is not None and not isinstance(doc["worker_name"], str):
        raise ValueError("appservice_streams_synapse: 'worker_name' must be a string or null (the main process)")
    batch = doc.get("batch_size", 100)
    if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 10_000:
        raise ValueError("appservice_streams_synapse: 'batch_size' must be an integer from 1 to 10000")
    for name in ("poll_interval_s", "aliases_interval_s", "delivery_timeout_s"):
        value = doc.get(name, 1.0)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"appservice_streams_synapse: '{name}' must be a positive number")
    kafka = doc.get("kafka", {})
    if not isinstance(kafka, Mapping):
        raise ValueError("appservice_streams_synapse: 'kafka' must be a mapping of librdkafka settings")
    fixed = sorted(set(kafka) & {*FIXED_PRODUCER, "bootstrap.servers"})
    if fixed:
        raise ValueError(f"appservice_streams_synapse: 'kafka' may not set {fixed}: the feed's guarantees need them")
    return FeedConfig(**doc)


def producer_config(config: FeedConfig) -> dict[str, Any]:
    """librdkafka settings: acknowledged by all in-sync replicas, idempotent, Java's key hash."""
    return {
        "bootstrap.servers": config.bootstrap_servers,
        "linger.ms": 1,
        "message.timeout.ms": int(config.delivery_timeout_s * 1000),
        "client.id": "appservice-streams-synapse",
        **config.kafka,
        **FIXED_PRODUCER,
    }


@dataclass(frozen=True)
class StoredEvent:
    """One row of ``events`` joined with ``event_json``, and what serialising it needs."""

    stream_ordering: int
    event_id: str
    room_id: str
    pdu: Mapping[str, Any]
    internal_metadata: Mapping[str, Any]
    replaced: Mapping[str, Any] | None = None  # the PDU of the state event it replaces
    redaction: StoredEvent | None = None  # the redaction that applies to it


def _pruned(event_type: Any, content: Mapping[str, Any]) -> dict[str, Any]:
    if event_type == "m.room.create":
        return dict(content)
    keeps = REDACTION_KEEPS.get(event_type, frozenset())
    return {k: v for k, v in content.items() if k in keeps}


def client_event(stored: StoredEvent, now_ms: int) -> dict[str, Any]:
    """The event as Synapse's appservice sender serialises it (see the module docstring)."""
    pdu = stored.pdu
    event = {k: v for k, v in pdu.items() if k not in FEDERATION_KEYS and k != "unsigned"}
    event["event_id"] = stored.event_id
    event["room_id"] = stored.room_id
    stored_unsigned = pdu.get("unsigned")
    stored_unsigned = stored_unsigned if isinstance(stored_unsigned, Mapping) else {}
    unsigned: dict[str, Any] = {}
    age_ts = stored_unsigned.get("age_ts")
    if isinstance(age_ts, int):
        unsigned["age"] = now_ms - age_ts
    for key in STORED_UNSIGNED:
        if key in stored_unsigned:
            unsigned[key] = stored_unsigned[key]
    if stored.replaced is not None and "replaces_state" in unsigned:
        unsigned["prev_content"] = stored.replaced.get("content", {})
        unsigned["prev_sender"] = stored.replaced.get("sender")
    for flag, key in ADMIN_FLAGS.items():
        if stored.internal_metadata.get(flag):
            unsigned[key] = True
    if stored.redaction is not None:
        event["content"] = _pruned(pdu.get("type"), pdu.get("content") or {})
        unsigned["redacted_by"] = stored.redaction.event_id
        unsigned["redacted_because"] = client_event(stored.redaction, now_ms)
    content = event.get("content")
    redacts = content.get("redacts") if isinstance(content, Mapping) else None
    if pdu.get("type") == "m.room.redaction" and "redacts" not in event and isinstance(redacts, str):
        event["redacts"] = redacts
    event["unsigned"] = unsigned
    for key in V1_TOP_LEVEL:
        if key in unsigned:
            event[key] = unsigned[key]
    if "sender" in event:
        event["user_id"] = event["sender"]
    return event


def _encode(kind: str, **fields: Any) -> bytes:
    return json.dumps(
        {"v": ENVELOPE_VERSION, "kind": kind, **fields}, ensure_ascii=False, separators=(",", ":")
    ).encode()


def event_record(event: Mapping[str, Any]) -> Record:
    return str(event["room_id"]).encode(), _encode("event", event=dict(event))


def members_record(room_id: str, members: Iterable[str]) -> Record:
    """A room's local joined members now (kind ``room_members``): the cold-start snapshot."""
    return room_id.encode(), _encode("room_members", room_id=room_id, members=sorted(members))


def aliases_record(room_id: str, aliases: Iterable[str]) -> Record:
    return room_id.encode(), _encode("room_aliases", room_id=room_id, aliases=sorted(aliases))


def group(rows: Iterable[tuple[str, str]]) -> dict[str, frozenset[str]]:
    """``(room_id, value)`` rows → room → values."""
    grouped: dict[str, set[str]] = {}
    for room_id, value in rows:
        grouped.setdefault(room_id, set()).add(value)
    return {room_id: frozenset(values) for room_id, values in grouped.items()}


def changed_aliases(
    published: Mapping[str, frozenset[str]], now: Mapping[str, frozenset[str]]
) -> dict[str, frozenset[str]]:
    """Rooms whose aliases differ from what was published (a room that lost its last one: empty)."""
    changed = {room_id: aliases for room_id, aliases in now.items() if published.get(room_id) != aliases}
    changed.update({room_id: frozenset() for room_id in published if room_id not in now})
    return changed


def next_position(position: int, upto: int, read: list[int], limit: int) -> int:
    """Where the feed stands once the ``read`` stream orderings are published.

    A full read (``limit`` rows) ends at its last row; a shorter one read
    everything up to ``upto``, Synapse's persisted-up-to token (rows past a
    gap that is still being persisted are never read before it closes).
    """
    if len(read) >= limit:
        return read[-1]
    return max(position, upto)
