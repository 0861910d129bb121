"""One step of one appservice: the machine's commands applied to durable storage.

This is the pure half of the transaction agent. Given the inputs that arrived
for one appservice in one batch and a key-value store (a Faust table in the
worker, a dict in tests), it

1. loads the stored state (machine state + backlog cursor),
2. feeds every input through ``streams.machine.step``,
3. applies the storage commands: backlog appends, transaction bodies formed
   from the backlog and stored under their txn id, delivered ones forgotten,
4. writes the new state once,

and returns what the shell must do *after* that storage is durable: HTTP
sends of stored transactions and retry timers for the delay topic.

The state also keeps when the oldest undelivered items arrived (the backlog's
head chunk per kind, and the earliest arrival among the in-flight
transaction's items), so that any owner reads their age from the store. A
state written by the previous release has no times: its items count as
arrived at the first step that reads it.

Write order within a step, so that a crash after *any prefix* of the writes
leaves a consistent store (Faust's changelog is not transactional: a killed
worker may have made some records of a step durable and not others):

1. new backlog chunks and new transactions over ``INLINE_BODY_MAX`` (split
   in parts of ``MAX_TXN_PART_BYTES``, each one record), each under a key
   never used by the state that is durable now (txn keys include the txn id);
2. the state record: the commit point of the step, carrying the body of a
   smaller in-flight transaction inline (one record where three were: body,
   state, and the body's delete once delivered);
3. deletes of consumed chunks and delivered transactions.

A crash before 2 leaves the old state, which references only keys that still
exist; the step's inputs are replayed (their offsets were not committed) and
redo it. A crash after 2 leaves at most some garbage that nothing references.

Commit order across the worker (the shell keeps it): the step's changelog
records are acknowledged by Kafka → only then do HTTP sends start and is the
batch acked, so its input offsets can be committed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from streams.backlog import Backlog, BacklogCursor, KeyValueStore
from streams.codec import (
    StoredAppservice,
    StoredTxn,
    decode_appservice,
    decode_txn,
    decode_txn_head,
    encode_appservice,
    encode_txn_parts,
)
from streams.errors import InvariantBroken
from streams.machine import (
    KINDS,
    AppserviceState,
    CameUp,
    Command,
    DeadLetterTxn,
    Enqueue,
    ForgetTxn,
    FormSlice,
    FormTxn,
    Ignored,
    Input,
    ItemKind,
    MachineConfig,
    ScheduleRetry,
    SendTxn,
    WentDown,
    step,
)
from streams.matrix import AppserviceID, TxnID
from streams.records import DelayRecord
from streams.transaction import build_body, slice_body


@dataclass(frozen=True)
class BodyFormat:
    """Which optional body keys an appservice's registration asks for."""

    ephemeral_stable: bool = False
    ephemeral_unstable: bool = False


@dataclass(frozen=True)
class Send:
    """A stored transaction to PUT, or, with ``dead_letter`` (why), to write to the dead-letter topic."""

    appservice_id: AppserviceID
    txn_id: TxnID
    attempt: int
    body: bytes
    dead_letter: str | None = None


@dataclass
class StepResult:
    state: AppserviceState
    # When the oldest item not yet delivered arrived, from the state stored; None when none is.
    oldest_ms: int | None = None
    sends: list[Send] = field(default_factory=list)
    delays: list[DelayRecord] = field(default_factory=list)
    notices: list[WentDown | CameUp | Ignored | FormSlice] = field(default_factory=list)


class _DeletesLast:
    """Passes reads and puts through; holds deletes until ``apply``."""

    def __init__(self, store: KeyValueStore) -> None:
        self._store = store
        self._deletes: list[bytes] = []

    def get(self, key: bytes) -> bytes | None:
        return self._store.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._store.put(key, value)

    def delete(self, key: bytes) -> None:
        self._deletes.append(key)

    def apply(self) -> None:
        for key in self._deletes:
            self._store.delete(key)
        self._deletes.clear()


class _Prefixed:
    """A namespace inside the one store: state, txn and backlog keys never collide."""

    def __init__(self, store: KeyValueStore, prefix: bytes) -> None:
        self._store = store
        self._prefix = prefix

    def get(self, key: bytes) -> bytes | None:
        return self._store.get(self._prefix + key)

    def put(self, key: bytes, value: bytes) -> None:
        self._store.put(self._prefix + key, value)

    def delete(self, key: bytes) -> None:
        self._store.delete(self._prefix + key)


# Bodies up to this size travel inline in the state record: at low latency most
# txns hold an event or two, and forming one then cost three changelog records
# (body, state, and the body's delete once delivered) where one does. Bigger
# bodies (catch-up: ~100 KB) keep a record of their own, so that state writes
# while they are in flight (items parked meanwhile) do not carry them again.
INLINE_BODY_MAX = 8 * 1024


def state_key(appservice_id: str) -> bytes:
    return b"s\x00" + appservice_id.encode()


def txn_key(appservice_id: str, txn_id: int, part: int = 0) -> bytes:
    """The key of a stored transaction (``part`` 0: its head) or of part ``part`` ≥ 1 of a split one."""
    key = b"t\x00" + appservice_id.encode() + b"\x00" + txn_id.to_bytes(8, "big")
    return key if part == 0 else key + part.to_bytes(4, "big")


def load_state(store: KeyValueStore, appservice_id: str) -> StoredAppservice:
    raw = store.get(state_key(appservice_id))
    return StoredAppservice(AppserviceState(), BacklogCursor()) if raw is None else decode_appservice(raw)


def run_step(
    appservice_id: AppserviceID,
    inputs: Iterable[Input],
    store: KeyValueStore,
    *,
    now_ms: int,
    config: MachineConfig,
    body_format: BodyFormat = BodyFormat(),
) -> StepResult:
    """Apply ``inputs`` in order for one appservice; see the module docstring.

    Raises:
        InvariantBroken: stored state and machine disagree (our bug).
    """
    stored = load_state(store, appservice_id)
    ordered = _DeletesLast(store)
    backlog = Backlog(appservice_id, stored.cursor, _Prefixed(ordered, b"b\x00"), now_ms)
    bodies = _Bodies(appservice_id, ordered, stored, now_ms)
    machine = stored.machine
    result = StepResult(machine)
    for event in inputs:
        machine, commands = step(machine, event, now_ms, config)
        for command in commands:
            _apply(appservice_id, command, backlog, bodies, result, body_format)
    new = StoredAppservice(machine, backlog.flush(), bodies.inline_body_of(machine), bodies.since_of(machine))
    if new != stored:
        store.put(state_key(appservice_id), encode_appservice(new))
    ordered.apply()
    result.state = machine
    result.oldest_ms = new.oldest_ms
    return result


class _Bodies:
    """One step's transaction bodies: formed in it, inline in the state record, or under their own key.

    With each, the earliest arrival among its items.
    """

    def __init__(
        self, appservice_id: AppserviceID, store: KeyValueStore, stored: StoredAppservice, now_ms: int
    ) -> None:
        self._id = appservice_id
        self._store = store
        self._formed: dict[TxnID, bytes] = {}
        self._inline: dict[TxnID, bytes] = {}
        self._since: dict[TxnID, int] = {}
        self._inflight_since = now_ms
        inflight = stored.machine.inflight
        if inflight is not None:
            if stored.inline_body is not None:
                self._inline[inflight.txn_id] = stored.inline_body
            # Not known (stored by the previous release): its items count as arrived now.
            since = stored.inflight_since_ms
            self._inflight_since = now_ms if since is None else since
            self._since[inflight.txn_id] = self._inflight_since

    def form(self, txn_id: TxnID, body: bytes, since_ms: int) -> None:
        self._since[txn_id] = since_ms
        self._formed[txn_id] = body
        if len(body) <= INLINE_BODY_MAX:
            self._inline[txn_id] = body  # written with the state, the step's commit point
        else:
            self._put_apart(txn_id, body)

    def _put_apart(self, txn_id: TxnID, body: bytes) -> None:
        """Store ``body`` under its own key(s): keys the durable state does not reference yet, written before
        the state. The head last, so a head is only ever found with its parts."""
        head, *parts = encode_txn_parts(StoredTxn(txn_id, body))
        for number, part in enumerate(parts, start=1):
            self._store.put(txn_key(self._id, txn_id, number), part)
        self._store.put(txn_key(self._id, txn_id), head)

    def slice_since(self, source: TxnID) -> int:
        """The arrival time of a slice of refused txn ``source``: the refused txn's own (its earliest item's).

        Every slice inherits it, through the txn in flight when the step began (the refused txn itself, or
        the previous slice): an upper bound on the age of a later slice's items, never an understatement.
        """
        return self._since.get(source, self._inflight_since)

    def keep_apart(self, txn_id: TxnID) -> None:
        """Store ``txn_id``'s body under its own key if it is inline: a refused txn's body outlives its time in
        flight (its slices are formed from it). The key is one the durable state does not reference yet."""
        body = self._inline.pop(txn_id, None)
        if body is not None:
            self._put_apart(txn_id, body)

    def body(self, txn_id: TxnID) -> bytes:
        """Raises: InvariantBroken if the state says the txn is stored and it is not."""
        body = self._formed.get(txn_id)
        if body is None:
            body = self._inline.get(txn_id)
        return body if body is not None else _stored_body(self._store, self._id, txn_id)

    def forget(self, txn_id: TxnID) -> None:
        self._formed.pop(txn_id, None)
        self._since.pop(txn_id, None)
        if self._inline.pop(txn_id, None) is None:
            # Deletes are held until after the state.
            raw = self._store.get(txn_key(self._id, txn_id))
            part_count = 1 if raw is None else decode_txn_head(raw).part_count
            for number in range(part_count):
                self._store.delete(txn_key(self._id, txn_id, number))

    def inline_body_of(self, machine: AppserviceState) -> bytes | None:
        return None if machine.inflight is None else self._inline.get(machine.inflight.txn_id)

    def since_of(self, machine: AppserviceState) -> int | None:
        """Raises: InvariantBroken if the txn in flight was neither stored nor formed (our bug)."""
        if machine.inflight is None:
            return None
        since = self._since.get(machine.inflight.txn_id)
        if since is None:
            raise InvariantBroken(f"txn {machine.inflight.txn_id} of {self._id} is in flight with no arrival time")
        return since


def _apply(
    appservice_id: AppserviceID,
    command: Command,
    backlog: Backlog,
    bodies: _Bodies,
    result: StepResult,
    body_format: BodyFormat,
) -> None:
    if isinstance(command, Enqueue):
        backlog.append(command.kind, command.payloads, command.arrived_ms)
    elif isinstance(command, FormTxn):
        taken = [backlog.take(kind, command.txn.counts[kind]) for kind in KINDS]
        body = build_body(
            taken[ItemKind.EVENT][0],
            taken[ItemKind.EPHEMERAL][0],
            taken[ItemKind.TO_DEVICE][0],
            taken[ItemKind.DEVICE][0],
            ephemeral_stable=body_format.ephemeral_stable,
            ephemeral_unstable=body_format.ephemeral_unstable,
        )
        times = [since for _, since in taken if since is not None]
        if not times:
            raise InvariantBroken(f"txn {command.txn.txn_id} of {appservice_id} formed of no items")
        bodies.form(command.txn.txn_id, body, min(times))
    elif isinstance(command, FormSlice):
        bodies.keep_apart(command.source)
        try:
            body = slice_body(bodies.body(command.source), command.start, command.txn.counts)
        except ValueError as exc:
            raise InvariantBroken(f"stored txn {command.source} of {appservice_id}: {exc}") from exc
        bodies.form(command.txn.txn_id, body, bodies.slice_since(command.source))
        result.notices.append(command)
    elif isinstance(command, SendTxn):
        result.sends.append(Send(appservice_id, command.txn_id, command.attempt, bodies.body(command.txn_id)))
    elif isinstance(command, DeadLetterTxn):
        body = bodies.body(command.txn_id)
        result.sends.append(Send(appservice_id, command.txn_id, 0, body, dead_letter=command.detail))
    elif isinstance(command, ScheduleRetry):
        result.delays.append(DelayRecord(command.txn_id, command.due_ms, command.attempt))
    elif isinstance(command, ForgetTxn):
        bodies.forget(command.txn_id)
    else:
        result.notices.append(command)


def _stored_body(store: KeyValueStore, appservice_id: AppserviceID, txn_id: TxnID) -> bytes:
    """The body stored under ``txn_id``'s key, its parts joined.

    Raises: InvariantBroken if it, or one of its parts, is not stored.
    """
    raw = store.get(txn_key(appservice_id, txn_id))
    head = None if raw is None else decode_txn_head(raw)
    if head is None or head.txn_id != txn_id:
        raise InvariantBroken(f"txn {txn_id} of {appservice_id} is not stored")
    parts = [head.first]
    for number in range(1, head.part_count):
        raw = store.get(txn_key(appservice_id, txn_id, number))
        part = None if raw is None else decode_txn(raw)
        if part is None or part.txn_id != txn_id:
            raise InvariantBroken(
                f"part {number} of {head.part_count} of txn {txn_id} of {appservice_id} is not stored"
            )
        parts.append(part.body)
    return b"".join(parts)
