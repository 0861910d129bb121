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

Write order within a step, so that a crash after *any prefix* of the writes
leaves a consistent store (Faust's changelog is not transactional: a killed
worker may have made some records of a step durable and not others):

1. new backlog chunks and new transactions, each under a key never used by
   the state that is durable now (txn keys include the txn id);
2. the state record: the commit point of the step;
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
from streams.codec import StoredAppservice, StoredTxn, decode_appservice, decode_txn, encode_appservice, encode_txn
from streams.errors import InvariantBroken
from streams.machine import (
    KINDS,
    AppserviceState,
    CameUp,
    Command,
    Enqueue,
    ForgetTxn,
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
from streams.transaction import build_body


@dataclass(frozen=True)
class BodyFormat:
    """Which optional body keys an appservice's registration asks for."""

    ephemeral_stable: bool = False
    ephemeral_unstable: bool = False


@dataclass(frozen=True)
class Send:
    appservice_id: AppserviceID
    txn_id: TxnID
    attempt: int
    body: bytes


@dataclass
class StepResult:
    state: AppserviceState
    sends: list[Send] = field(default_factory=list)
    delays: list[DelayRecord] = field(default_factory=list)
    notices: list[WentDown | CameUp | Ignored] = field(default_factory=list)


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


def state_key(appservice_id: str) -> bytes:
    return b"s\x00" + appservice_id.encode()


def txn_key(appservice_id: str, txn_id: int) -> bytes:
    return b"t\x00" + appservice_id.encode() + b"\x00" + txn_id.to_bytes(8, "big")


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
    backlog = Backlog(appservice_id, stored.cursor, _Prefixed(ordered, b"b\x00"))
    machine = stored.machine
    result = StepResult(machine)
    formed: dict[TxnID, bytes] = {}
    for event in inputs:
        machine, commands = step(machine, event, now_ms, config)
        for command in commands:
            _apply(appservice_id, command, backlog, ordered, formed, result, body_format)
    cursor = backlog.flush()
    if machine != stored.machine or cursor != stored.cursor:
        store.put(state_key(appservice_id), encode_appservice(StoredAppservice(machine, cursor)))
    ordered.apply()
    result.state = machine
    return result


def _apply(
    appservice_id: AppserviceID,
    command: Command,
    backlog: Backlog,
    store: KeyValueStore,
    formed: dict[TxnID, bytes],
    result: StepResult,
    body_format: BodyFormat,
) -> None:
    if isinstance(command, Enqueue):
        backlog.append(command.kind, command.payloads)
    elif isinstance(command, FormTxn):
        taken = [backlog.take(kind, command.txn.counts[kind]) for kind in KINDS]
        body = build_body(
            taken[ItemKind.EVENT],
            taken[ItemKind.EPHEMERAL],
            taken[ItemKind.TO_DEVICE],
            taken[ItemKind.DEVICE],
            ephemeral_stable=body_format.ephemeral_stable,
            ephemeral_unstable=body_format.ephemeral_unstable,
        )
        store.put(txn_key(appservice_id, command.txn.txn_id), encode_txn(StoredTxn(command.txn.txn_id, body)))
        formed[command.txn.txn_id] = body
    elif isinstance(command, SendTxn):
        sent = formed.get(command.txn_id)
        if sent is None:
            sent = _stored_body(store, appservice_id, command.txn_id)
        result.sends.append(Send(appservice_id, command.txn_id, command.attempt, sent))
    elif isinstance(command, ScheduleRetry):
        result.delays.append(DelayRecord(command.txn_id, command.due_ms, command.attempt))
    elif isinstance(command, ForgetTxn):
        store.delete(txn_key(appservice_id, command.txn_id))
        formed.pop(command.txn_id, None)
    else:
        result.notices.append(command)


def _stored_body(store: KeyValueStore, appservice_id: AppserviceID, txn_id: TxnID) -> bytes:
    raw = store.get(txn_key(appservice_id, txn_id))
    stored = None if raw is None else decode_txn(raw)
    if stored is None or stored.txn_id != txn_id:
        raise InvariantBroken(f"txn {txn_id} of {appservice_id} is not stored")
    return stored.body
