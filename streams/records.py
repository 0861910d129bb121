"""Records on our internal topics: the appservice inbox and the delay topic.

Both are keyed by appservice ID (UTF-8), so every record of one appservice
lands on one partition and is handled by the one worker that owns its state.
The inbox carries *every* input of the state machine: routed items, send
outcomes, retry timers, resumes. Its log is therefore the full history of
an appservice, replayable after a crash.

Binary layout, version 1 (integers big-endian)::

    inbox items      01 'B' then per item: kind:u8 src_partition:u32 src_offset:u64
                     length:u32 payload (one record per appservice per router batch)
    inbox succeeded  01 'S' txn_id:u64
    inbox failed     01 'F' txn_id:u64 retry_after_ms:i64 (-1 = none) reason:utf8
    inbox retry due  01 'D' txn_id:u64
    inbox resume     01 'R'
    inbox ping ok    01 'P'
    delay            01 txn_id:u64 due_ms:u64 attempt:u32
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

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
    TxnFailed,
    TxnSucceeded,
)
from streams.matrix import TxnID

V1 = 1
_TXN = struct.Struct(">BcQ")
_FAILED = struct.Struct(">BcQq")
_DELAY = struct.Struct(">BQQI")
_BATCHED = struct.Struct(">BIQI")
# Kafka refuses records over 1 MB by default; stay well below with headers.
MAX_BATCH_BYTES = 900_000


def encode_items(items: list[Item]) -> list[bytes]:
    """Items for one appservice as few records as fit under ``MAX_BATCH_BYTES``, in order."""
    records: list[bytes] = []
    parts: list[bytes] = [bytes((V1,)), b"B"]
    size = 2
    for item in items:
        part = _BATCHED.pack(item.kind, item.source.partition, item.source.offset, len(item.payload)) + item.payload
        if size + len(part) > MAX_BATCH_BYTES and len(parts) > 2:
            records.append(b"".join(parts))
            parts, size = [bytes((V1,)), b"B"], 2
        parts.append(part)
        size += len(part)
    if len(parts) > 2:
        records.append(b"".join(parts))
    return records


def _decode_items(raw: bytes) -> ItemsArrived:
    items = []
    pos = 2
    while pos < len(raw):
        kind, partition, offset, length = _BATCHED.unpack_from(raw, pos)
        pos += _BATCHED.size
        if pos + length > len(raw):
            raise BadRecord("truncated inbox items record")
        items.append(Item(ItemKind(kind), SourcePosition(partition, offset), raw[pos : pos + length]))
        pos += length
    return ItemsArrived(tuple(items))


def encode_outcome(event: TxnSucceeded | TxnFailed | RetryDue | Resume | PingSucceeded) -> bytes:
    if isinstance(event, TxnSucceeded):
        return _TXN.pack(V1, b"S", event.txn_id)
    if isinstance(event, TxnFailed):
        retry_after = -1 if event.retry_after_ms is None else event.retry_after_ms
        return _FAILED.pack(V1, b"F", event.txn_id, retry_after) + event.reason.encode()
    if isinstance(event, RetryDue):
        return _TXN.pack(V1, b"D", event.txn_id)
    if isinstance(event, Resume):
        return bytes((V1,)) + b"R"
    return bytes((V1,)) + b"P"


def decode_inbox(raw: bytes | None, *, jitter: float = 0.0) -> Input:
    """Decode one inbox record into a machine input.

    Raises:
        BadRecord: empty, an unknown version or tag, or truncated.
    """
    if not raw or len(raw) < 2:
        raise BadRecord("inbox record is empty or truncated")
    if raw[0] != V1:
        raise BadRecord(f"unknown inbox record version {raw[0]}")
    tag = raw[1:2]
    try:
        if tag == b"B":
            return _decode_items(raw)
        if tag == b"S":
            return TxnSucceeded(TxnID(_TXN.unpack_from(raw)[2]))
        if tag == b"F":
            _, _, txn_id, retry_after = _FAILED.unpack_from(raw)
            reason = raw[_FAILED.size :].decode(errors="replace")
            return TxnFailed(TxnID(txn_id), reason, None if retry_after < 0 else retry_after, jitter)
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
