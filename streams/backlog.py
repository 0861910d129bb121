"""An appservice's parked items: a chunked FIFO per kind over a key-value store.

Items accepted while a transaction is in flight (or while the appservice is
DOWN) must survive a crash until they are formed into a transaction. Writing
one record per item would cost a table write and a changelog record each
(docs/decisions/backlog-chunks.md); instead each step appends one *chunk* per kind. A step
that appends items and forms them into a transaction at once never writes
them at all.

Layout (see ``streams.codec`` for the bytes): chunk key =
``appservice id, 0x00, kind, chunk number (8 bytes big-endian)`` so keys sort
numerically per appservice and kind. The cursor (``BacklogCursor``) says
which chunks are live and how far into the head chunk we have read; it is
stored together with the machine state, so both change atomically per step.

Arrival times, for the age of the oldest undelivered item: each chunk holds
the earliest arrival among its items (one time per chunk, not per item), and
the cursor repeats the head chunk's, so a reader of the state alone knows the
age of each kind's oldest parked item. Items left in a partly taken head chunk
keep its time: an age is overstated by at most the span of the items one step
parked together. A chunk written by the previous release has no time: its
items count as arrived when the step that reaches it reads it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from streams.errors import InvariantBroken
from streams.machine import KINDS, ItemKind


class KeyValueStore(Protocol):
    def get(self, key: bytes) -> bytes | None: ...
    def put(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...


@dataclass(frozen=True)
class KindCursor:
    head_chunk: int = 0  # first live chunk
    head_pos: int = 0  # items of the head chunk already taken
    tail_chunk: int = 0  # number the next written chunk gets
    # The head chunk's arrival time; None when no chunk is live (or, read
    # from the previous release's state, not known).
    head_ms: int | None = None

    @property
    def live(self) -> bool:
        return self.head_chunk < self.tail_chunk


@dataclass(frozen=True)
class BacklogCursor:
    kinds: tuple[KindCursor, ...] = (KindCursor(),) * len(KINDS)


CHUNK_V1 = 1  # the previous release's: no arrival time
CHUNK_V2 = 2
_U32 = struct.Struct(">I")
_CHUNK_HEAD = struct.Struct(">Bq")  # version, earliest arrival (ms) among the chunk's items
# A chunk is one changelog record: Kafka (and aiokafka's producer) refuse
# records over 1 MB by default. A step can append far more than that (a
# burst routed while the appservice was busy), so pending items are split.
MAX_CHUNK_BYTES = 512 * 1024


@dataclass(frozen=True)
class Chunk:
    arrived_ms: int | None  # None: written by the previous release, which kept no time
    payloads: list[bytes]


def encode_chunk(payloads: list[bytes], arrived_ms: int) -> bytes:
    parts = [_CHUNK_HEAD.pack(CHUNK_V2, arrived_ms)]
    for payload in payloads:
        parts.append(_U32.pack(len(payload)))
        parts.append(payload)
    return b"".join(parts)


def chunk_arrived_ms(raw: bytes) -> int | None:
    """The arrival time of a chunk, without decoding its items.

    Raises: InvariantBroken on an unknown version or a truncated chunk.
    """
    if raw[:1] == bytes((CHUNK_V1,)):
        return None
    if raw[:1] != bytes((CHUNK_V2,)) or len(raw) < _CHUNK_HEAD.size:
        raise InvariantBroken(f"unknown or truncated backlog chunk {raw[:1]!r}: written by a newer release?")
    return int(_CHUNK_HEAD.unpack_from(raw)[1])


def decode_chunk(raw: bytes) -> Chunk:
    """Raises: InvariantBroken on an unknown version or a truncated chunk."""
    arrived_ms = chunk_arrived_ms(raw)
    out: list[bytes] = []
    pos, end = (1 if arrived_ms is None else _CHUNK_HEAD.size), len(raw)
    while pos < end:
        if pos + 4 > end:
            raise InvariantBroken("truncated backlog chunk")
        (size,) = _U32.unpack_from(raw, pos)
        pos += 4
        if pos + size > end:
            raise InvariantBroken("truncated backlog chunk")
        out.append(raw[pos : pos + size])
        pos += size
    return Chunk(arrived_ms, out)


def chunk_key(appservice_id: str, kind: ItemKind, chunk: int) -> bytes:
    return appservice_id.encode() + b"\x00" + bytes((kind,)) + chunk.to_bytes(8, "big")


class Backlog:
    """A working view of one appservice's backlog for the length of one step.

    ``append``/``take`` buffer in memory; ``flush`` writes at most one chunk per
    kind (more if they would be over ``MAX_CHUNK_BYTES``), deletes fully
    consumed chunks and returns the new cursor. ``now_ms`` is when the step
    runs: the arrival time of items whose time the previous release did not keep.
    """

    def __init__(self, appservice_id: str, cursor: BacklogCursor, store: KeyValueStore, now_ms: int) -> None:
        self._id = appservice_id
        self._store = store
        self._now_ms = now_ms
        self._cursors = list(cursor.kinds)
        for kind, c in enumerate(cursor.kinds):
            if c.head_ms is None and c.live:  # a cursor of the previous release
                self._cursors[kind] = KindCursor(c.head_chunk, c.head_pos, c.tail_chunk, now_ms)
        self._pending: list[list[bytes]] = [[] for _ in KINDS]
        # Per kind, the runs appended this step: (index in pending of the first, earliest arrival among them).
        self._runs: list[list[tuple[int, int]]] = [[] for _ in KINDS]
        self._head: list[list[bytes] | None] = [None for _ in KINDS]

    def append(self, kind: ItemKind, payloads: Sequence[bytes], arrived_ms: int) -> None:
        """Park ``payloads`` behind this kind's items; ``arrived_ms``: the earliest arrival among them."""
        if payloads:
            self._runs[kind].append((len(self._pending[kind]), arrived_ms))
            self._pending[kind].extend(payloads)

    def take(self, kind: ItemKind, count: int) -> tuple[list[bytes], int | None]:
        """Remove and return the first ``count`` items of ``kind``, and the earliest arrival among them.

        The time is that of each chunk or run they came from (None when ``count`` is 0).

        Raises:
            InvariantBroken: fewer than ``count`` items are held (the machine's
                counts and the store disagree).
        """
        taken: list[bytes] = []
        oldest: int | None = None
        cursor = self._cursors[kind]
        while len(taken) < count and cursor.live:
            head = self._load_head(kind, cursor)
            cursor = self._cursors[kind]  # loading a chunk learns its time
            assert cursor.head_ms is not None  # known for every live head chunk once loaded
            oldest = cursor.head_ms if oldest is None else min(oldest, cursor.head_ms)
            want = count - len(taken)
            taken.extend(head[cursor.head_pos : cursor.head_pos + want])
            new_pos = min(len(head), cursor.head_pos + want)
            if new_pos == len(head):
                self._store.delete(chunk_key(self._id, kind, cursor.head_chunk))
                self._head[kind] = None
                cursor = KindCursor(cursor.head_chunk + 1, 0, cursor.tail_chunk)
            else:
                cursor = KindCursor(cursor.head_chunk, new_pos, cursor.tail_chunk, cursor.head_ms)
            self._cursors[kind] = cursor
        if cursor.head_ms is None and cursor.live:
            # A new head chunk not read in full: its time from its first bytes, for the state.
            self._cursors[kind] = replace(cursor, head_ms=self._arrived_ms(kind, cursor.head_chunk))
        if len(taken) < count:
            pending, runs = self._pending[kind], self._runs[kind]
            want = count - len(taken)
            if want > len(pending):
                raise InvariantBroken(
                    f"backlog of {self._id} kind {kind.name} holds {len(taken) + len(pending)} items, {count} wanted"
                )
            earliest = _earliest(runs, 0, want)
            oldest = earliest if oldest is None else min(oldest, earliest)
            taken.extend(pending[:want])
            del pending[:want]
            if not pending:
                runs.clear()
            elif len(runs) > 1:
                left = _overlapping(runs, want, want + len(pending))
                self._runs[kind] = [(max(0, first - want), ms) for first, ms in left]
        return taken, oldest

    def flush(self) -> BacklogCursor:
        """Write pending items as chunks of at most ``MAX_CHUNK_BYTES`` (one item alone may be more)."""
        for kind in KINDS:
            pending, runs = self._pending[kind], self._runs[kind]
            start = 0
            while start < len(pending):
                end, size = start, 0
                while end < len(pending) and (end == start or size + len(pending[end]) <= MAX_CHUNK_BYTES):
                    size += len(pending[end]) + _U32.size
                    end += 1
                arrived_ms = _earliest(runs, start, end)
                cursor = self._cursors[kind]
                chunk = encode_chunk(pending[start:end], arrived_ms)
                self._store.put(chunk_key(self._id, kind, cursor.tail_chunk), chunk)
                head_ms = cursor.head_ms if cursor.live else arrived_ms
                self._cursors[kind] = KindCursor(cursor.head_chunk, cursor.head_pos, cursor.tail_chunk + 1, head_ms)
                start = end
            self._pending[kind] = []
            self._runs[kind] = []
        return BacklogCursor(tuple(self._cursors))

    def _load_head(self, kind: ItemKind, cursor: KindCursor) -> list[bytes]:
        head = self._head[kind]
        if head is None:
            chunk = decode_chunk(self._read(kind, cursor.head_chunk))
            head = self._head[kind] = chunk.payloads
            if cursor.head_ms is None:
                arrived = chunk.arrived_ms
                self._cursors[kind] = replace(cursor, head_ms=self._now_ms if arrived is None else arrived)
        return head

    def _arrived_ms(self, kind: ItemKind, chunk: int) -> int:
        """Raises: InvariantBroken if the chunk is missing."""
        arrived = chunk_arrived_ms(self._read(kind, chunk))
        return self._now_ms if arrived is None else arrived

    def _read(self, kind: ItemKind, chunk: int) -> bytes:
        """A stored chunk's bytes. Raises: InvariantBroken if it is missing (the cursor and the store disagree)."""
        raw = self._store.get(chunk_key(self._id, kind, chunk))
        if raw is None:
            raise InvariantBroken(f"backlog chunk {chunk} of {self._id} kind {kind.name} is missing")
        return raw


def _overlapping(runs: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The runs holding some of the pending items ``start`` to ``end`` (exclusive), ``end`` > ``start``.

    A run ends where the next begins; the last one holds every item after its first.
    """
    return [
        run for at, run in enumerate(runs) if run[0] < end and (runs[at + 1][0] if at + 1 < len(runs) else end) > start
    ]


def _earliest(runs: list[tuple[int, int]], start: int, end: int) -> int:
    """The earliest arrival among the pending items ``start`` to ``end`` (exclusive), ``end`` > ``start``."""
    if len(runs) == 1:  # most steps: one run per kind
        return runs[0][1]
    return min(ms for _, ms in _overlapping(runs, start, end))
