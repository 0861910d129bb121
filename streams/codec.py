"""Stored values as versioned bytes: the layout of everything we keep in RocksDB.

Every value starts with a format byte so a later release can read an older
store. Integers in keys are big-endian so RocksDB's byte order is numeric
order. Layouts (version 1):

* backlog chunk:   ``01`` then, per item, ``u32 length`` + the item's JSON
  (``streams.backlog`` owns it, beside its key layout).
* appservice:      ``01`` then JSON ``[phase, inflight, attempt, retry_at_ms,
  down_since_ms, last_txn_id, queued, applied, cursor, ahead]`` where ``inflight``
  and ``ahead`` are ``null`` or ``[txn_id, [n_events, n_ephemeral, n_to_device, n_device]]``
  and ``cursor`` is four ``[head_chunk, head_pos, tail_chunk]`` lists, one per kind.
  States written before ``ahead`` existed have nine fields and read as none ahead.
* transaction:     ``01`` then ``u64 txn_id`` then the exact body bytes sent.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import orjson

from streams.backlog import BacklogCursor, KindCursor
from streams.errors import InvariantBroken
from streams.machine import KINDS, AppserviceState, Phase, Txn, counts
from streams.matrix import TxnID

V1 = 1
_U64 = struct.Struct(">Q")


def expect_version(raw: bytes, what: str) -> None:
    """Raises: InvariantBroken when ``raw`` is not in format version 1."""
    if not raw or raw[0] != V1:
        raise InvariantBroken(f"unknown {what} format {raw[:1]!r}: written by a newer release?")


@dataclass(frozen=True)
class StoredAppservice:
    """What one appservice key holds: the machine state and its backlog cursor."""

    machine: AppserviceState
    cursor: BacklogCursor


def encode_appservice(stored: StoredAppservice) -> bytes:
    s = stored.machine
    inflight = _encode_txn_ref(s.inflight)
    cursor = [[k.head_chunk, k.head_pos, k.tail_chunk] for k in stored.cursor.kinds]
    doc = [
        s.phase.value,
        inflight,
        s.attempt,
        s.retry_at_ms,
        s.down_since_ms,
        s.last_txn_id,
        list(s.queued),
        [list(p) for p in s.applied],
        cursor,
        _encode_txn_ref(s.ahead),
    ]
    return bytes((V1,)) + orjson.dumps(doc)


def _encode_txn_ref(txn: Txn | None) -> list[object] | None:
    return None if txn is None else [txn.txn_id, list(txn.counts)]


def _decode_txn_ref(ref: list[object] | None) -> Txn | None:
    return None if ref is None else Txn(TxnID(ref[0]), counts(ref[1]))  # type: ignore[arg-type]


def decode_appservice(raw: bytes) -> StoredAppservice:
    """Raises: InvariantBroken on an unknown version or a malformed value."""
    expect_version(raw, "appservice state")
    try:
        fields = orjson.loads(raw[1:])
        if len(fields) == 9:
            fields.append(None)  # written before txns were formed ahead
        phase, inflight, attempt, retry_at, down_since, last_txn_id, queued, applied, cursor, ahead = fields
        machine = AppserviceState(
            phase=Phase(phase),
            inflight=_decode_txn_ref(inflight),
            ahead=_decode_txn_ref(ahead),
            attempt=attempt,
            retry_at_ms=retry_at,
            down_since_ms=down_since,
            last_txn_id=last_txn_id,
            queued=counts(queued),
            applied=tuple((p, o) for p, o in applied),
        )
        kinds = tuple(KindCursor(h, p, t) for h, p, t in cursor)
        if len(kinds) != len(KINDS):
            raise InvariantBroken(f"{len(kinds)} backlog cursors for {len(KINDS)} kinds")
        return StoredAppservice(machine, BacklogCursor(kinds))
    except (ValueError, TypeError, IndexError) as exc:
        raise InvariantBroken(f"malformed appservice state: {exc}") from exc


@dataclass(frozen=True)
class StoredTxn:
    txn_id: TxnID
    body: bytes


def encode_txn(txn: StoredTxn) -> bytes:
    return bytes((V1,)) + _U64.pack(txn.txn_id) + txn.body


def decode_txn(raw: bytes) -> StoredTxn:
    """Raises: InvariantBroken on an unknown version or a truncated value."""
    expect_version(raw, "transaction")
    if len(raw) < 9:
        raise InvariantBroken("truncated transaction")
    return StoredTxn(TxnID(_U64.unpack_from(raw, 1)[0]), raw[9:])
