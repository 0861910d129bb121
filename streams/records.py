"""Records on our internal topics: the appservice inbox and the delay topic.

Both are keyed by appservice ID (UTF-8), so every record of one appservice
lands on one partition and is handled by the one worker that owns its state.
The inbox carries *every* input of the state machine: routed items, send
outcomes, retry timers, resumes. Its log is therefore the full history of
an appservice, replayable after a crash.

Routed items are the exception to one appservice per record: the router
writes one record per inbox *partition* per batch, holding the items of every
appservice that hashes there (the per-record cost in Faust and aiokafka is
what limits a worker, and 50 appservices would cut a batch into 50 records).
It is produced to that partition explicitly, with no key.

Each routed item carries when it arrived (its input record's timestamp) in a
header, ``ARRIVED_HEADER``, not in the value: the value's layout is the
previous release's, so during a rolling upgrade a worker of either release
reads the other's records (an older one ignores the header; a record without
it, or whose header does not match its items, means "arrived when read").

Binary layout, version 1 (integers big-endian)::

    inbox routed     01 'M' then per appservice: id_length:u16 id:utf8 items_length:u32
                     items, each: kind:u8 src_partition:u32 src_offset:u64 length:u32 payload
                     header ARRIVED_HEADER: per item, in record order, arrived_ms:i64 (-1 = not known)
    inbox succeeded  01 'S' txn_id:u64
    inbox failed     01 'F' txn_id:u64 retry_after_ms:i64 (-1 = none) reason:utf8
    inbox too large  01 'L' txn_id:u64 reason:utf8
    inbox dead-lettered 01 'X' txn_id:u64
    inbox retry due  01 'D' txn_id:u64
    inbox resume     01 'R'
    inbox ping ok    01 'P'
    delay            01 txn_id:u64 due_ms:u64 attempt:u32
    dead letter      see streams.dead_letter
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace

from streams.errors import BadRecord
from streams.machine import (
    Input,
    Item,
    ItemKind,
    ItemsArrived,
    PingSucceeded,
    Resume,
    RetryDue,
    SourcePosition,
    TxnDeadLettered,
    TxnFailed,
    TxnSucceeded,
    TxnTooLarge,
)
from streams.matrix import AppserviceID, TxnID

V1 = 1
_TXN = struct.Struct(">BcQ")
_FAILED = struct.Struct(">BcQq")
_DELAY = struct.Struct(">BQQI")
_ITEM = struct.Struct(">BIQI")
_GROUP = struct.Struct(">HI")  # id length, then (after the id) items length
_ROUTED_TAG = bytes((V1,)) + b"M"
ARRIVED_HEADER = "arrived_ms"
_ARRIVED = struct.Struct(">q")
# Kafka refuses records over 1 MB by default; stay well below with headers.
MAX_BATCH_BYTES = 900_000


@dataclass(frozen=True)
class RoutedRecord:
    value: bytes
    arrived: bytes  # the value of its ARRIVED_HEADER

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return [(ARRIVED_HEADER, self.arrived)]


def encode_routed(routed: dict[AppserviceID, list[Item]]) -> list[RoutedRecord]:
    """Items of several appservices (one inbox partition) as few records as fit under ``MAX_BATCH_BYTES``.

    Each appservice's items keep their order; one appservice may continue in
    the next record. The arrival times in the header count towards the size.
    """
    records: list[RoutedRecord] = []
    record: list[bytes] = [_ROUTED_TAG]
    arrived: list[bytes] = []
    record_size = len(_ROUTED_TAG)
    for appservice_id, items in routed.items():
        name = appservice_id.encode()
        group: list[bytes] = []
        group_size = _GROUP.size + len(name)
        for item in items:
            part = _ITEM.pack(item.kind, item.source.partition, item.source.offset, len(item.payload)) + item.payload
            full = record_size + group_size + len(part) + _ARRIVED.size > MAX_BATCH_BYTES
            if full and (group or len(record) > 1):
                record.extend(_group(name, group))
                records.append(RoutedRecord(b"".join(record), b"".join(arrived)))
                record, record_size, arrived = [_ROUTED_TAG], len(_ROUTED_TAG), []
                group, group_size = [], _GROUP.size + len(name)
            group.append(part)
            group_size += len(part) + _ARRIVED.size
            arrived.append(_ARRIVED.pack(-1 if item.arrived_ms is None else item.arrived_ms))
        if group:
            record.extend(_group(name, group))
            record_size += group_size
    if len(record) > 1:
        records.append(RoutedRecord(b"".join(record), b"".join(arrived)))
    return records


def _group(name: bytes, items: list[bytes]) -> list[bytes]:
    """One appservice's part of a routed record; empty when it has no items."""
    if not items:
        return []
    head = _GROUP.pack(len(name), sum(len(i) for i in items))
    return [head[:2], name, head[2:], *items]


def decode_routed(raw: bytes, arrived: bytes | None = None) -> list[tuple[AppserviceID, ItemsArrived]]:
    """Decode a routed-items record into each appservice's items, in record order.

    ``arrived``: its ``ARRIVED_HEADER``. Without one that holds a time per
    item, every item's time is None (not known: it arrived when read). A bad
    header is no reason to lose the items: it is only a gauge's input.

    Raises:
        BadRecord: not a routed record, or truncated.
    """
    if raw[:2] != _ROUTED_TAG:
        raise BadRecord("not a routed-items inbox record")
    times = [] if not arrived or len(arrived) % _ARRIVED.size else [t for (t,) in _ARRIVED.iter_unpack(arrived)]
    at = 0
    groups = []
    pos = 2
    try:
        while pos < len(raw):
            name_length = int.from_bytes(raw[pos : pos + 2], "big")
            name = raw[pos + 2 : pos + 2 + name_length].decode()
            pos += 2 + name_length
            (items_length,) = struct.unpack_from(">I", raw, pos)
            pos += 4
            end = pos + items_length
            if end > len(raw):
                raise BadRecord(f"truncated routed-items record (appservice {name!r})")
            items = []
            while pos < end:
                kind, partition, offset, length = _ITEM.unpack_from(raw, pos)
                pos += _ITEM.size
                if pos + length > end:
                    raise BadRecord(f"truncated item in routed-items record (appservice {name!r})")
                arrived_ms = times[at] if at < len(times) and times[at] >= 0 else None
                items.append(
                    Item(ItemKind(kind), SourcePosition(partition, offset), raw[pos : pos + length], arrived_ms)
                )
                pos += length
                at += 1
            groups.append((AppserviceID(name), ItemsArrived(tuple(items))))
    except (struct.error, ValueError) as exc:
        raise BadRecord(f"malformed routed-items record: {exc}") from exc
    if times and at != len(times):
        # The header does not match the items: none of its times can be trusted.
        groups = [(a, ItemsArrived(tuple(replace(i, arrived_ms=None) for i in g.items))) for a, g in groups]
    return groups


def encode_outcome(
    event: TxnSucceeded | TxnFailed | TxnTooLarge | TxnDeadLettered | RetryDue | Resume | PingSucceeded,
) -> bytes:
    if isinstance(event, TxnSucceeded):
        return _TXN.pack(V1, b"S", event.txn_id)
    if isinstance(event, TxnTooLarge):
        return _TXN.pack(V1, b"L", event.txn_id) + event.reason.encode()
    if isinstance(event, TxnDeadLettered):
        return _TXN.pack(V1, b"X", event.txn_id)
    if isinstance(event, TxnFailed):
        retry_after = -1 if event.retry_after_ms is None else event.retry_after_ms
        return _FAILED.pack(V1, b"F", event.txn_id, retry_after) + event.reason.encode()
    if isinstance(event, RetryDue):
        return _TXN.pack(V1, b"D", event.txn_id)
    if isinstance(event, Resume):
        return bytes((V1,)) + b"R"
    return bytes((V1,)) + b"P"


def decode_inbox_record(
    key: bytes | None, raw: bytes | None, *, jitter: float = 0.0, headers: Mapping[str, bytes] | None = None
) -> list[tuple[AppserviceID, Input]]:
    """Decode any inbox record (with its ``headers``) into the machine inputs it holds, with their appservice.

    Raises:
        BadRecord: empty, an unknown version or tag, truncated, or a
            single-appservice record without a UTF-8 key.
    """
    if raw is not None and raw[:2] == _ROUTED_TAG:
        return list(decode_routed(raw, None if headers is None else headers.get(ARRIVED_HEADER)))
    try:
        appservice_id = AppserviceID((key or b"").decode())
    except UnicodeDecodeError as exc:
        raise BadRecord(f"inbox record key is not UTF-8: {exc}") from exc
    if not appservice_id:
        raise BadRecord("single-appservice inbox record without a key")
    return [(appservice_id, decode_inbox(raw, jitter=jitter))]


def decode_inbox(raw: bytes | None, *, jitter: float = 0.0) -> Input:
    """Decode one single-appservice inbox record (an outcome, timer, resume or ping) into a machine input.

    Raises:
        BadRecord: empty, an unknown version or tag, or truncated.
    """
    if not raw or len(raw) < 2:
        raise BadRecord("inbox record is empty or truncated")
    if raw[0] != V1:
        raise BadRecord(f"unknown inbox record version {raw[0]}")
    tag = raw[1:2]
    try:
        if tag == b"S":
            return TxnSucceeded(TxnID(_TXN.unpack_from(raw)[2]))
        if tag == b"F":
            _, _, txn_id, retry_after = _FAILED.unpack_from(raw)
            reason = raw[_FAILED.size :].decode(errors="replace")
            return TxnFailed(TxnID(txn_id), reason, None if retry_after < 0 else retry_after, jitter)
        if tag == b"L":
            return TxnTooLarge(TxnID(_TXN.unpack_from(raw)[2]), raw[_TXN.size :].decode(errors="replace"))
        if tag == b"X":
            return TxnDeadLettered(TxnID(_TXN.unpack_from(raw)[2]))
        if tag == b"D":
            return RetryDue(TxnID(_TXN.unpack_from(raw)[2]))
        if tag == b"R":
            return Resume()
        if tag == b"P":
            return PingSucceeded()
    except (struct.error, ValueError) as exc:
        raise BadRecord(f"truncated or malformed inbox record {tag!r}: {exc}") from exc
    raise BadRecord(f"unknown inbox record tag {tag!r}")


@dataclass(frozen=True)
class DelayRecord:
    txn_id: TxnID
    due_ms: int
    attempt: int


def encode_delay(record: DelayRecord) -> bytes:
    return _DELAY.pack(V1, record.txn_id, record.due_ms, record.attempt)


def decode_delay(raw: bytes | None) -> DelayRecord:
    """Raises: BadRecord when the record is not a version-1 delay record."""
    if not raw or raw[0] != V1 or len(raw) != _DELAY.size:
        raise BadRecord("malformed delay record")
    _, txn_id, due_ms, attempt = _DELAY.unpack(raw)
    return DelayRecord(TxnID(txn_id), due_ms, attempt)
