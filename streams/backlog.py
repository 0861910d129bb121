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
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class BacklogCursor:
    kinds: tuple[KindCursor, ...] = (KindCursor(),) * len(KINDS)


CHUNK_V1 = 1
_U32 = struct.Struct(">I")
# A chunk is one changelog record: Kafka (and aiokafka's producer) refuse
# records over 1 MB by default. A step can append far more than that (a
# burst routed while the appservice was busy), so pending items are split.
MAX_CHUNK_BYTES = 512 * 1024


def encode_chunk(payloads: list[bytes]) -> bytes:
    parts = [bytes((CHUNK_V1,))]
    for payload in payloads:
        parts.append(_U32.pack(len(payload)))
        parts.append(payload)
    return b"".join(parts)


def decode_chunk(raw: bytes) -> list[bytes]:
    """Raises: InvariantBroken on an unknown version or a truncated chunk."""
    if not raw or raw[0] != CHUNK_V1:
        raise InvariantBroken(f"unknown backlog chunk format {raw[:1]!r}: written by a newer release?")
    out: list[bytes] = []
    pos, end = 1, len(raw)
    while pos < end:
        if pos + 4 > end:
            raise InvariantBroken("truncated backlog chunk")
        (size,) = _U32.unpack_from(raw, pos)
        pos += 4
        if pos + size > end:
            raise InvariantBroken("truncated backlog chunk")
        out.append(raw[pos : pos + size])
        pos += size
    return out


def chunk_key(appservice_id: str, kind: ItemKind, chunk: int) -> bytes:
    return appservice_id.encode() + b"\x00" + bytes((kind,)) + chunk.to_bytes(8, "big")


class Backlog:
    """A working view of one appservice's backlog for the length of one step.

    ``append``/``take`` buffer in memory; ``flush`` writes at most one chunk per
    kind, deletes fully consumed chunks and returns the new cursor.
    """

    def __init__(self, appservice_id: str, cursor: BacklogCursor, store: KeyValueStore) -> None:
        self._id = appservice_id
        self._store = store
        self._cursors = list(cursor.kinds)
        self._pending: list[list[bytes]] = [[] for _ in KINDS]
        self._head: list[list[bytes] | None] = [None for _ in KINDS]

    def append(self, kind: ItemKind, payloads: Sequence[bytes]) -> None:
        self._pending[kind].extend(payloads)

    def take(self, kind: ItemKind, count: int) -> list[bytes]:
        """Remove and return the first ``count`` items of ``kind``.

        Raises:
            InvariantBroken: fewer than ``count`` items are held (the machine's
                counts and the store disagree).
        """
        taken: list[bytes] = []
        cursor = self._cursors[kind]
        while len(taken) < count and cursor.head_chunk < cursor.tail_chunk:
            head = self._load_head(kind, cursor)
            want = count - len(taken)
            taken.extend(head[cursor.head_pos : cursor.head_pos + want])
            new_pos = min(len(head), cursor.head_pos + want)
            if new_pos == len(head):
                self._store.delete(chunk_key(self._id, kind, cursor.head_chunk))
                self._head[kind] = None
                cursor = KindCursor(cursor.head_chunk + 1, 0, cursor.tail_chunk)
            else:
                cursor = KindCursor(cursor.head_chunk, new_pos, cursor.tail_chunk)
        self._cursors[kind] = cursor
        if len(taken) < count:
            pending = self._pending[kind]
            want = count - len(taken)
            if want > len(pending):
                raise InvariantBroken(
                    f"backlog of {self._id} kind {kind.name} holds {len(taken) + len(pending)} items, {count} wanted"
                )
            taken.extend(pending[:want])
            del pending[:want]
        return taken

    def flush(self) -> BacklogCursor:
        """Write pending items as chunks of at most ``MAX_CHUNK_BYTES`` (one item alone may be more)."""
        for kind in KINDS:
            pending = self._pending[kind]
            start = 0
            while start < len(pending):
                end, size = start, 0
                while end < len(pending) and (end == start or size + len(pending[end]) <= MAX_CHUNK_BYTES):
                    size += len(pending[end]) + _U32.size
                    end += 1
                cursor = self._cursors[kind]
                self._store.put(chunk_key(self._id, kind, cursor.tail_chunk), encode_chunk(pending[start:end]))
                self._cursors[kind] = KindCursor(cursor.head_chunk, cursor.head_pos, cursor.tail_chunk + 1)
                start = end
            self._pending[kind] = []
        return BacklogCursor(tuple(self._cursors))

    def _load_head(self, kind: ItemKind, cursor: KindCursor) -> list[bytes]:
        head = self._head[kind]
        if head is None:
            key = chunk_key(self._id, kind, cursor.head_chunk)
            raw = self._store.get(key)
            if raw is None:
                raise InvariantBroken(f"backlog chunk {cursor.head_chunk} of {self._id} kind {kind.name} is missing")
            head = self._head[kind] = decode_chunk(raw)
        return head
