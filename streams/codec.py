"""Stored values as versioned bytes: the layout of everything we keep in RocksDB.

Every value starts with a format byte so a later release can read an older
store. Integers in keys are big-endian so RocksDB's byte order is numeric
order. Layouts (version 1):

* backlog chunk:   ``01`` then, per item, ``u32 length`` + the item's JSON
  (``streams.backlog`` owns it, beside its key layout). Version 2 (written
  now): ``02`` then ``i64`` the earliest arrival (ms) among its items, then
  the items as in version 1.
* appservice:      ``01`` then JSON ``[phase, inflight, attempt, retry_at_ms,
  down_since_ms, last_txn_id, queued, applied, cursor]`` where ``inflight`` is
  ``null`` or ``[txn_id, [n_events, n_ephemeral, n_to_device, n_device]]`` and ``cursor``
  is four ``[head_chunk, head_pos, tail_chunk]`` lists, one per kind; then, only
  while a refused transaction is delivered in slices, ``[source_txn_id, total,
  done, size, dead_lettering]`` (``streams.machine.Split``; counts as four-item
  lists).
* transaction:     ``01`` then ``u64 txn_id`` then the exact body bytes sent.

Version 2 of the appservice value carries the in-flight transaction's body
inline (``streams.delivery`` does so for bodies up to ``INLINE_BODY_MAX``):
``02`` then ``u32 length`` of the version-1 JSON, that JSON, then the exact
body bytes. A state without an inline body is still written as version 1.

Version 2 of the transaction value splits a body over ``MAX_TXN_PART_BYTES``
into parts, each its own record (a Kafka record is refused over 1 MB by
default, and 100 events of 64 KiB make a 6.4 MB body): the head, under the
transaction's key, is ``02`` then ``u64 txn_id``, ``u32 part count``, then
the first part; part ``n`` (n ≥ 1), under the key with ``u32 n`` appended, is
``01`` then ``u64 txn_id`` then its bytes. The body is the parts joined in
order. A body that fits one part is still written as version 1.

Version 3 of the appservice value (the only one written now) keeps arrival
times, so that the age of the oldest undelivered item survives a change of
owner: ``03`` then ``u32 length`` of a JSON document, that document, then
the in-flight body's exact bytes if it is inline (nothing otherwise; a body
is never empty). The document is version 1's with each cursor list extended
by ``head_ms`` (the head chunk's arrival time, ``null`` when no chunk is
live) and one more element, ``inflight_since_ms``: the earliest arrival among
the in-flight transaction's items (``null`` when none is in flight).
Versions 1 and 2 still decode, their times ``None`` (not known: the step
that reads them counts those items as arrived then).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import orjson

from streams.backlog import BacklogCursor, KindCursor
from streams.errors import InvariantBroken
from streams.machine import KINDS, AppserviceState, Phase, Split, Txn, counts
from streams.matrix import TxnID

V1 = 1
V2 = 2  # appservice state with the in-flight txn's body inline (previous release)
V3 = 3  # appservice state with arrival times
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")


def expect_version(raw: bytes, what: str) -> None:
    """Raises: InvariantBroken when ``raw`` is not in format version 1."""
    if not raw or raw[0] != V1:
        raise InvariantBroken(f"unknown {what} format {raw[:1]!r}: written by a newer release?")


@dataclass(frozen=True)
class StoredAppservice:
    """What one appservice key holds: the machine state, its backlog cursor, and maybe the in-flight body.

    ``inline_body`` is the exact body of ``machine.inflight`` when it is kept
    here rather than under its own transaction key; None otherwise.
    ``inflight_since_ms``: the earliest arrival among the in-flight
    transaction's items (None when none is in flight, or not known).
    """

    machine: AppserviceState
    cursor: BacklogCursor
    inline_body: bytes | None = None
    inflight_since_ms: int | None = None

    @property
    def oldest_ms(self) -> int | None:
        """When the oldest item not yet delivered arrived (in flight or parked); None when none is."""
        oldest = self.inflight_since_ms if self.machine.inflight is not None else None
        for kind in self.cursor.kinds:
            head_ms = kind.head_ms
            if head_ms is not None and kind.live and (oldest is None or head_ms < oldest):
                oldest = head_ms
        return oldest


def encode_appservice(stored: StoredAppservice) -> bytes:
    """Raises: InvariantBroken for an empty inline body (its absence would be read)."""
    s = stored.machine
    inflight = None if s.inflight is None else [s.inflight.txn_id, list(s.inflight.counts)]
    cursor = [[k.head_chunk, k.head_pos, k.tail_chunk, k.head_ms] for k in stored.cursor.kinds]
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
        stored.inflight_since_ms,
    ]
    if s.split is not None:
        sp = s.split
        doc.append([sp.source, list(sp.total), list(sp.done), list(sp.size), sp.dead_lettering])
    json = orjson.dumps(doc)
    if stored.inline_body == b"":
        raise InvariantBroken("an empty inline transaction body")
    return bytes((V3,)) + _U32.pack(len(json)) + json + (stored.inline_body or b"")


def decode_appservice(raw: bytes) -> StoredAppservice:
    """Raises: InvariantBroken on an unknown version or a malformed value."""
    version = raw[:1]
    inline_body = None
    if version in (bytes((V2,)), bytes((V3,))):
        end = 5 + _U32.unpack_from(raw, 1)[0] if len(raw) >= 5 else len(raw) + 1
        if end > len(raw):
            raise InvariantBroken("truncated appservice state")
        json, inline_body = raw[5:end], raw[end:]
        if version == bytes((V3,)) and not inline_body:
            inline_body = None
    else:
        expect_version(raw, "appservice state")
        json = raw[1:]
    try:
        doc = orjson.loads(json)
        phase, inflight, attempt, retry_at, down_since, last_txn_id, queued, applied, cursor = doc[:9]
        more = doc[9:]
        # Version 3 adds the in-flight txn's earliest arrival; a split in progress follows, if any.
        inflight_since = more.pop(0) if version == bytes((V3,)) else None
        split = None
        if more:
            [[source, total, done, size, dead_lettering]] = more
            split = Split(TxnID(source), counts(total), counts(done), counts(size), bool(dead_lettering))
        machine = AppserviceState(
            phase=Phase(phase),
            inflight=None if inflight is None else Txn(TxnID(inflight[0]), counts(inflight[1])),
            attempt=attempt,
            retry_at_ms=retry_at,
            down_since_ms=down_since,
            last_txn_id=last_txn_id,
            queued=counts(queued),
            applied=tuple((p, o) for p, o in applied),
            split=split,
        )
        # Cursors of versions 1 and 2 have no head time: KindCursor's default (not known).
        kinds = tuple(KindCursor(*k) for k in cursor)
        if len(kinds) != len(KINDS):
            raise InvariantBroken(f"{len(kinds)} backlog cursors for {len(KINDS)} kinds")
        if inline_body is not None and machine.inflight is None:
            raise InvariantBroken("an inline transaction body without a transaction in flight")
        return StoredAppservice(machine, BacklogCursor(kinds), inline_body, inflight_since)
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        raise InvariantBroken(f"malformed appservice state: {exc}") from exc


@dataclass(frozen=True)
class StoredTxn:
    txn_id: TxnID
    body: bytes


# A stored transaction's part is one changelog record: stay well under Kafka's
# default 1 MB record limit, as backlog chunks do.
MAX_TXN_PART_BYTES = 512 * 1024


def encode_txn(txn: StoredTxn) -> bytes:
    """One record holding the whole body (version 1); also the layout of part n ≥ 1 of a split body."""
    return bytes((V1,)) + _U64.pack(txn.txn_id) + txn.body


def encode_txn_parts(txn: StoredTxn) -> list[bytes]:
    """The records ``txn`` is stored in: one if its body fits ``MAX_TXN_PART_BYTES``, else a head and parts."""
    body = txn.body
    if len(body) <= MAX_TXN_PART_BYTES:
        return [encode_txn(txn)]
    parts = [body[at : at + MAX_TXN_PART_BYTES] for at in range(0, len(body), MAX_TXN_PART_BYTES)]
    head = bytes((V2,)) + _U64.pack(txn.txn_id) + _U32.pack(len(parts)) + parts[0]
    return [head, *(encode_txn(StoredTxn(txn.txn_id, part)) for part in parts[1:])]


@dataclass(frozen=True)
class TxnHead:
    """The record under a transaction's key: its first (or only) part, and how many parts there are."""

    txn_id: TxnID
    part_count: int
    first: bytes


def decode_txn_head(raw: bytes) -> TxnHead:
    """Raises: InvariantBroken on an unknown version or a truncated value."""
    if raw[:1] == bytes((V2,)):
        if len(raw) < 13:
            raise InvariantBroken("truncated transaction head")
        part_count = _U32.unpack_from(raw, 9)[0]
        if part_count < 2:
            raise InvariantBroken(f"a split transaction of {part_count} parts")
        return TxnHead(TxnID(_U64.unpack_from(raw, 1)[0]), part_count, raw[13:])
    whole = decode_txn(raw)
    return TxnHead(whole.txn_id, 1, whole.body)


def decode_txn(raw: bytes) -> StoredTxn:
    """Raises: InvariantBroken on an unknown version or a truncated value."""
    expect_version(raw, "transaction")
    if len(raw) < 9:
        raise InvariantBroken("truncated transaction")
    return StoredTxn(TxnID(_U64.unpack_from(raw, 1)[0]), raw[9:])
