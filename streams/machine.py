"""The per-appservice delivery state machine, sans-I/O.

One ``AppserviceState`` per appservice. ``step(state, input, now_ms, config)``
returns the next state and the commands the shell must carry out, in order.
Nothing here sleeps, reads a clock, draws a random number or touches a
network or a disk: time, jitter and every outcome are inputs.

Phases (Synapse calls the first two UP and the last two DOWN)::

    IDLE         nothing in flight, nothing queued
    SENDING      one transaction in flight, appservice believed healthy
    BACKING_OFF  the in-flight transaction failed; waiting for its retry time
    RETRYING     the same transaction is being retried

Guarantees the transitions keep (and ``tests/unit/test_machine.py`` proves):

* at most one transaction in flight; a retry reuses its id and its body;
* transaction ids strictly increase and start above the wall clock in
  microseconds, so they are above any id a homeserver's own sender used and
  a state lost in a crash can never make us reuse an id for other content;
* items keep their order per kind; an idle appservice gets its first item at
  once, alone; later ones go together, up to the per-kind limits;
* while DOWN, new items are parked, not sent; on success the backlog drains in
  full transactions back to back;
* each input item is accepted once: an item whose source position
  (input partition, offset) was already applied is dropped, which makes
  Faust's at-least-once replays after a crash harmless.

A transaction the appservice refuses as too large (413, ``TxnTooLarge``) is
never sent again: it is delivered in *slices* (``Split``), each a new
transaction with a fresh id, formed from its stored body: the first half of
each kind's items, then the next, in order; a refused slice is halved again.
A slice of one item still refused is dead-lettered (``DeadLetterTxn``, an
effect like a send, so it is durable before the state moves past it; its
``TxnDeadLettered`` outcome moves on) and delivery goes on, in slices of half
the refused transaction again: the item was refused for itself, not for the
size of the slices around it (which would otherwise go one item per txn).
The refused transaction's body stays stored until its last slice is done.
Other 4xx are retried like any failure: a wrong URL is mended by the
operator, and dropping data would be worse.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace

from streams.backoff import backoff_ms
from streams.errors import InvariantBroken
from streams.matrix import TxnID


class Phase(enum.Enum):
    IDLE = "idle"
    SENDING = "sending"
    BACKING_OFF = "backing_off"
    RETRYING = "retrying"

    @property
    def is_down(self) -> bool:
        return self in (Phase.BACKING_OFF, Phase.RETRYING)


class ItemKind(enum.IntEnum):
    """The independent FIFOs of one appservice; each has its own txn limit.

    ``DEVICE`` holds MSC3202 device-list changes and key counts: a txn takes
    all of them and merges them into one summary, so it has no limit.
    """

    EVENT = 0
    EPHEMERAL = 1
    TO_DEVICE = 2
    DEVICE = 3


KINDS = tuple(ItemKind)
Counts = tuple[int, int, int, int]
NO_ITEMS: Counts = (0, 0, 0, 0)
UNLIMITED = 2**31 - 1


def counts(values: list[int]) -> Counts:
    """Raises: InvariantBroken unless there is exactly one value per kind."""
    if len(values) != len(KINDS):
        raise InvariantBroken(f"{len(values)} counts for {len(KINDS)} kinds")
    return (values[0], values[1], values[2], values[3])


@dataclass(frozen=True)
class SourcePosition:
    """Where an item came from on the input topic: the key of idempotence."""

    partition: int
    offset: int


@dataclass(frozen=True)
class Item:
    kind: ItemKind
    source: SourcePosition
    payload: bytes  # the item's JSON, as it goes into the transaction body
    # When it arrived: its input record's timestamp (ms). None when the inbox
    # record did not say (written by an older release): it arrived when read.
    arrived_ms: int | None = None


@dataclass(frozen=True)
class Txn:
    """A formed transaction: its id and how many items of each kind it holds."""

    txn_id: TxnID
    counts: Counts


def units(of: Counts) -> int:
    """What a transaction can be split into: each event, ephemeral and to-device item, and the device summary."""
    return of[ItemKind.EVENT] + of[ItemKind.EPHEMERAL] + of[ItemKind.TO_DEVICE] + (1 if of[ItemKind.DEVICE] else 0)


@dataclass(frozen=True)
class Split:
    """A transaction refused as too large, delivered in slices of at most ``size`` items per kind.

    ``source`` keeps its stored body until every slice is delivered or
    dead-lettered; ``done`` counts its items already out, from the head of
    each kind. ``dead_lettering``: the slice in flight is one item still
    refused, being written to the dead-letter topic.
    """

    source: TxnID
    total: Counts
    done: Counts
    size: Counts
    dead_lettering: bool = False

    @property
    def left(self) -> Counts:
        return counts([total - done for total, done in zip(self.total, self.done, strict=True)])


@dataclass(frozen=True)
class MachineConfig:
    unit_ms: int = 1000
    max_per_kind: Counts = (100, 100, 100, UNLIMITED)


@dataclass(frozen=True)
class AppserviceState:
    phase: Phase = Phase.IDLE
    inflight: Txn | None = None
    attempt: int = 0
    retry_at_ms: int | None = None
    down_since_ms: int | None = None
    last_txn_id: int = 0
    queued: Counts = NO_ITEMS
    # Highest input offset applied, per input partition, sorted by partition.
    applied: tuple[tuple[int, int], ...] = ()
    split: Split | None = None  # a refused transaction being delivered in slices

    @property
    def backlog(self) -> int:
        """Items accepted but not yet in a transaction."""
        return sum(self.queued)

    @property
    def in_transit(self) -> Counts:
        """Items taken into transactions and not yet delivered: the one in flight, or what a split has left."""
        if self.split is not None:
            return self.split.left
        return self.inflight.counts if self.inflight is not None else NO_ITEMS


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ItemsArrived:
    items: tuple[Item, ...]


@dataclass(frozen=True)
class TxnSucceeded:
    txn_id: TxnID


@dataclass(frozen=True)
class TxnFailed:
    txn_id: TxnID
    reason: str
    retry_after_ms: int | None = None
    jitter: float = 0.0  # drawn by the shell, in [0, 1)


@dataclass(frozen=True)
class TxnTooLarge:
    """The appservice refused the transaction as too large (HTTP 413): resending it cannot succeed."""

    txn_id: TxnID
    reason: str


@dataclass(frozen=True)
class TxnDeadLettered:
    """The transaction in flight is in the dead-letter topic (acknowledged): delivery goes on."""

    txn_id: TxnID


@dataclass(frozen=True)
class RetryDue:
    txn_id: TxnID


@dataclass(frozen=True)
class Resume:
    """A worker took ownership: resend what was in flight, re-arm timers."""


@dataclass(frozen=True)
class PingSucceeded:
    """The appservice answered a ping: retry a backing-off txn right now."""


Input = ItemsArrived | TxnSucceeded | TxnFailed | TxnTooLarge | TxnDeadLettered | RetryDue | Resume | PingSucceeded

# --------------------------------------------------------------- commands


@dataclass(frozen=True)
class Enqueue:
    """Append payloads, in order, to the tail of this kind's backlog.

    ``arrived_ms``: the earliest arrival among them (one time per run, not one
    per item: the backlog keeps the age of its oldest items, not of each).
    """

    kind: ItemKind
    payloads: tuple[bytes, ...]
    arrived_ms: int


@dataclass(frozen=True)
class FormTxn:
    """Take ``txn.counts`` items from the head of each backlog, store them
    durably as transaction ``txn.txn_id``."""

    txn: Txn


@dataclass(frozen=True)
class FormSlice:
    """Store as ``txn.txn_id`` the ``txn.counts`` items of stored transaction ``source`` that follow the first
    ``start`` of each kind (the device summary goes whole with the slice whose ``counts`` has any)."""

    txn: Txn
    source: TxnID
    start: Counts


@dataclass(frozen=True)
class DeadLetterTxn:
    """Write the stored transaction to the dead-letter topic; answer ``TxnDeadLettered`` once Kafka has it."""

    txn_id: TxnID
    detail: str


@dataclass(frozen=True)
class SendTxn:
    """Send the stored transaction (again, if ``attempt`` > 0)."""

    txn_id: TxnID
    attempt: int


@dataclass(frozen=True)
class ScheduleRetry:
    txn_id: TxnID
    due_ms: int
    attempt: int


@dataclass(frozen=True)
class ForgetTxn:
    """The transaction was delivered; its stored body can go."""

    txn_id: TxnID


@dataclass(frozen=True)
class WentDown:
    txn_id: TxnID
    reason: str


@dataclass(frozen=True)
class CameUp:
    txn_id: TxnID
    down_for_ms: int


@dataclass(frozen=True)
class Ignored:
    """An input that no longer applies (a stale outcome, a duplicate timer)."""

    reason: str


Command = (
    Enqueue | FormTxn | FormSlice | SendTxn | DeadLetterTxn | ScheduleRetry | ForgetTxn | WentDown | CameUp | Ignored
)
Commands = list[Command]

# ------------------------------------------------------------ transitions


def step(state: AppserviceState, event: Input, now_ms: int, config: MachineConfig) -> tuple[AppserviceState, Commands]:
    """Apply one input; return the next state and the commands to carry out.

    Raises:
        InvariantBroken: a (phase, input) pair that has no transition, or a
            state that breaks the invariants above. Either is our bug.
    """
    if isinstance(event, (TxnSucceeded, TxnFailed, TxnTooLarge, TxnDeadLettered, RetryDue)):
        current = state.inflight.txn_id if state.inflight else None
        if event.txn_id != current:
            return state, [Ignored(f"{type(event).__name__} for txn {event.txn_id}, in flight: {current}")]
    _check(state)
    handler = _TRANSITIONS.get((state.phase, type(event)))
    if handler is None:
        raise InvariantBroken(f"no transition from {state.phase.name} on {type(event).__name__}")
    commands: Commands = []
    new_state = handler(state, event, now_ms, config, commands)
    _check(new_state)
    return new_state, commands


def _check(state: AppserviceState) -> None:
    if (state.phase is Phase.IDLE) != (state.inflight is None):
        raise InvariantBroken(f"phase {state.phase.name} with inflight {state.inflight}")
    if state.phase is Phase.IDLE and state.backlog:
        raise InvariantBroken(f"IDLE with {state.backlog} items queued")
    if state.phase is Phase.BACKING_OFF and state.retry_at_ms is None:
        raise InvariantBroken("BACKING_OFF without a retry time")
    if min(state.queued) < 0:
        raise InvariantBroken(f"negative queue {state.queued}")
    split = state.split
    if split is not None and (state.inflight is None or min(split.left) < 0 or not units(split.size)):
        raise InvariantBroken(f"split {split} with inflight {state.inflight}")


def _next_txn_id(state: AppserviceState, now_ms: int) -> int:
    # Clock-derived: above any id a homeserver's counter reached, and above
    # every id we used before a crash that lost our state.
    return max(state.last_txn_id + 1, now_ms * 1000)


def _form_and_send(state: AppserviceState, now_ms: int, config: MachineConfig, out: Commands) -> AppserviceState:
    taking = counts([min(queued, limit) for queued, limit in zip(state.queued, config.max_per_kind, strict=True)])
    txn_id = TxnID(_next_txn_id(state, now_ms))
    txn = Txn(txn_id, taking)
    out.append(FormTxn(txn))
    out.append(SendTxn(txn_id, 0))
    return replace(
        state,
        phase=Phase.SENDING,
        inflight=txn,
        last_txn_id=txn_id,
        queued=counts([queued - took for queued, took in zip(state.queued, taking, strict=True)]),
    )


def _items_arrived(
    state: AppserviceState, event: ItemsArrived, now_ms: int, config: MachineConfig, out: Commands
) -> AppserviceState:
    # Consecutive items of one kind become one Enqueue, built once (not a tuple
    # copied per item: a 500-item batch parked while an appservice is busy
    # cost 4 µs per item that way), and the state is replaced once, unless an
    # item finds the appservice IDLE and forms a txn at once.
    applied = dict(state.applied)
    queued = list(state.queued)
    run: list[bytes] = []
    run_kind: ItemKind | None = None
    run_ms = now_ms

    def enqueue_run() -> None:
        nonlocal run_ms
        if not run or run_kind is None:
            return
        last = out[-1] if out else None
        if isinstance(last, Enqueue) and last.kind is run_kind:
            out[-1] = Enqueue(run_kind, (*last.payloads, *run), min(last.arrived_ms, run_ms))
        else:
            out.append(Enqueue(run_kind, tuple(run), run_ms))
        run.clear()
        run_ms = now_ms

    for item in event.items:
        source = item.source
        if source.offset <= applied.get(source.partition, -1):
            continue  # a replay of an item we already hold
        applied[source.partition] = source.offset
        if item.kind is not run_kind:
            enqueue_run()
            run_kind = item.kind
        run.append(item.payload)
        # No time said: it arrived now. A time ahead of now (a producer's clock) counts as now.
        arrived = item.arrived_ms
        if arrived is not None and arrived < run_ms:
            run_ms = arrived
        queued[item.kind] += 1
        if state.phase is Phase.IDLE:
            enqueue_run()
            state = _form_and_send(replace(state, queued=counts(queued)), now_ms, config, out)
            queued = list(state.queued)
    enqueue_run()
    return replace(state, queued=counts(queued), applied=tuple(sorted(applied.items())))


def _succeeded(
    state: AppserviceState, event: TxnSucceeded, now_ms: int, config: MachineConfig, out: Commands
) -> AppserviceState:
    if state.phase.is_down:
        state = _came_up(state, event.txn_id, now_ms, out)
    state = replace(state, phase=Phase.SENDING, attempt=0, retry_at_ms=None)
    return _next(state, now_ms, config, out)


def _came_up(state: AppserviceState, txn_id: TxnID, now_ms: int, out: Commands) -> AppserviceState:
    """Tell that the appservice answered ``txn_id`` after being DOWN, and for how long; it is no longer down."""
    since = state.down_since_ms if state.down_since_ms is not None else now_ms
    out.append(CameUp(txn_id, max(0, now_ms - since)))
    return replace(state, down_since_ms=None)


def _next(state: AppserviceState, now_ms: int, config: MachineConfig, out: Commands) -> AppserviceState:
    """The txn in flight is out (delivered or dead-lettered): forget it, then form the next slice or txn."""
    assert state.inflight is not None
    done = state.inflight
    split = state.split
    if split is None or done.txn_id != split.source:
        out.append(ForgetTxn(done.txn_id))
    if split is not None:
        split = replace(
            split,
            done=counts([d + n for d, n in zip(split.done, done.counts, strict=True)]),
            # After a dead letter, back to the first halving: one refused item says nothing of the rest.
            size=_halve(split.total) if split.dead_lettering else split.size,
            dead_lettering=False,
        )
        if not units(split.left):
            out.append(ForgetTxn(split.source))
            split = None
    was_down = state.phase.is_down
    state = replace(state, phase=Phase.IDLE, inflight=None, split=None, attempt=0, retry_at_ms=None)
    if split is not None:
        state = _form_slice(state, split, now_ms, out)
    elif state.backlog:
        state = _form_and_send(state, now_ms, config, out)
    if was_down and state.inflight is not None:
        return replace(state, phase=Phase.RETRYING)  # still down: nothing was accepted
    if was_down:
        state = _came_up(state, done.txn_id, now_ms, out)
    return state


def _halve(of: Counts) -> Counts:
    """The first half of each kind (the device summary goes whole); a single item of the first kind if no kind
    has two."""
    half = counts([(n + 1) // 2 for n in of[: ItemKind.DEVICE]] + [of[ItemKind.DEVICE]])
    if units(half) < units(of):
        return half
    first = next(kind for kind in KINDS if of[kind])
    return counts([of[kind] if kind is first else 0 for kind in KINDS])


def _form_slice(state: AppserviceState, split: Split, now_ms: int, out: Commands) -> AppserviceState:
    """Form and send the next slice of ``split``: up to ``split.size`` of each kind from what it has left."""
    left = split.left
    taking = counts(
        [min(n, limit) for n, limit in zip(left[: ItemKind.DEVICE], split.size[: ItemKind.DEVICE], strict=True)]
        + [left[ItemKind.DEVICE] if split.size[ItemKind.DEVICE] else 0]
    )
    if not units(taking):  # what is left is of kinds the size leaves out: one item of the first
        taking = _halve(counts([min(n, 1) for n in left[: ItemKind.DEVICE]] + [left[ItemKind.DEVICE]]))
    txn = Txn(TxnID(_next_txn_id(state, now_ms)), taking)
    out.append(FormSlice(txn, split.source, split.done))
    out.append(SendTxn(txn.txn_id, 0))
    return replace(
        state, phase=Phase.SENDING, inflight=txn, last_txn_id=txn.txn_id, split=split, attempt=0, retry_at_ms=None
    )


def _too_large(
    state: AppserviceState, event: TxnTooLarge, now_ms: int, config: MachineConfig, out: Commands
) -> AppserviceState:
    refused = state.inflight
    assert refused is not None
    if state.phase.is_down:
        # It answered: it is up, and refuses this txn for its size alone.
        state = _came_up(state, refused.txn_id, now_ms, out)
        state = replace(state, phase=Phase.SENDING, attempt=0, retry_at_ms=None)
    split = state.split or Split(refused.txn_id, refused.counts, NO_ITEMS, refused.counts)
    if units(refused.counts) <= 1:
        detail = f"txn {refused.txn_id} of one item refused as too large: {event.reason}"
        out.append(DeadLetterTxn(refused.txn_id, detail))
        return replace(state, split=replace(split, dead_lettering=True))
    if refused.txn_id != split.source:
        out.append(ForgetTxn(refused.txn_id))  # a slice: its items are still in the source
    split = replace(split, size=_halve(refused.counts))
    return _form_slice(replace(state, inflight=None), split, now_ms, out)


def _dead_lettered(
    state: AppserviceState, event: TxnDeadLettered, now_ms: int, config: MachineConfig, out: Commands
) -> AppserviceState:
    if state.split is None or not state.split.dead_lettering:
        out.append(Ignored(f"txn {event.txn_id} is not being dead-lettered"))
        return state
    return _next(state, now_ms, config, out)


def _attempt(state: AppserviceState) -> SendTxn | DeadLetterTxn:
    """What carrying on with the txn in flight means: sending it, or dead-lettering it if that had begun."""
    assert state.inflight is not None
    txn_id = state.inflight.txn_id
    if state.split is not None and state.split.dead_lettering:
        return DeadLetterTxn(txn_id, f"txn {txn_id} of one item refused as too large")
    return SendTxn(txn_id, state.attempt)


def _failed(
    state: AppserviceState, event: TxnFailed, now_ms: int, config: MachineConfig, out: Commands
) -> AppserviceState:
    attempt = state.attempt + 1
    due = now_ms + backoff_ms(attempt, unit_ms=config.unit_ms, jitter=event.jitter, retry_after_ms=event.retry_after_ms)
    if not state.phase.is_down:
        out.append(WentDown(event.txn_id, event.reason))
    out.append(ScheduleRetry(event.txn_id, due, attempt))
    return replace(
        state,
        phase=Phase.BACKING_OFF,
        attempt=attempt,
        retry_at_ms=due,
        down_since_ms=state.down_since_ms if state.down_since_ms is not None else now_ms,
    )


def _retry_due(
    state: AppserviceState, event: RetryDue, now_ms: int, config: MachineConfig, out: Commands
) -> AppserviceState:
    assert state.retry_at_ms is not None  # guaranteed by _check for BACKING_OFF
    if now_ms < state.retry_at_ms:
        # Woken early (a replayed timer, another worker's clock): re-arm.
        out.append(ScheduleRetry(event.txn_id, state.retry_at_ms, state.attempt))
        return state
    out.append(_attempt(state))
    return replace(state, phase=Phase.RETRYING)


def _retry_now(
    state: AppserviceState, event: PingSucceeded, now_ms: int, config: MachineConfig, out: Commands
) -> AppserviceState:
    out.append(_attempt(state))
    return replace(state, phase=Phase.RETRYING)


def _resend(
    state: AppserviceState, event: Resume, now_ms: int, config: MachineConfig, out: Commands
) -> AppserviceState:
    out.append(_attempt(state))
    return state


def _rearm(state: AppserviceState, event: Resume, now_ms: int, config: MachineConfig, out: Commands) -> AppserviceState:
    assert state.inflight is not None and state.retry_at_ms is not None
    out.append(ScheduleRetry(state.inflight.txn_id, state.retry_at_ms, state.attempt))
    return state


def _ignore(reason: str) -> Callable[..., AppserviceState]:
    def handler(
        state: AppserviceState, event: Input, now_ms: int, config: MachineConfig, out: Commands
    ) -> AppserviceState:
        out.append(Ignored(reason))
        return state

    return handler


# Handlers take their own input type; the table's lookup key guarantees it.
_Handler = Callable[..., AppserviceState]

# (phase, input) -> handler. Outcomes for a txn other than the one in flight
# never get here (``step`` answers them with Ignored first), so IDLE has no
# outcome rows: with nothing in flight every outcome is stale.
_TRANSITIONS: dict[tuple[Phase, type], _Handler] = {
    (Phase.IDLE, ItemsArrived): _items_arrived,
    (Phase.IDLE, Resume): _ignore("nothing in flight"),
    (Phase.IDLE, PingSucceeded): _ignore("nothing to retry"),
    (Phase.SENDING, ItemsArrived): _items_arrived,
    (Phase.SENDING, TxnSucceeded): _succeeded,
    (Phase.SENDING, TxnFailed): _failed,
    (Phase.SENDING, TxnTooLarge): _too_large,
    (Phase.SENDING, TxnDeadLettered): _dead_lettered,
    (Phase.SENDING, RetryDue): _ignore("not backing off"),
    (Phase.SENDING, Resume): _resend,
    (Phase.SENDING, PingSucceeded): _ignore("already sending"),
    (Phase.BACKING_OFF, ItemsArrived): _items_arrived,
    # A late success of an earlier attempt: same id, same body, delivered.
    (Phase.BACKING_OFF, TxnSucceeded): _succeeded,
    (Phase.BACKING_OFF, TxnFailed): _ignore("already backing off"),
    (Phase.BACKING_OFF, TxnTooLarge): _ignore("already backing off"),
    (Phase.BACKING_OFF, TxnDeadLettered): _dead_lettered,
    (Phase.BACKING_OFF, RetryDue): _retry_due,
    (Phase.BACKING_OFF, Resume): _rearm,
    (Phase.BACKING_OFF, PingSucceeded): _retry_now,
    (Phase.RETRYING, ItemsArrived): _items_arrived,
    (Phase.RETRYING, TxnSucceeded): _succeeded,
    (Phase.RETRYING, TxnFailed): _failed,
    (Phase.RETRYING, TxnTooLarge): _too_large,
    (Phase.RETRYING, TxnDeadLettered): _dead_lettered,
    (Phase.RETRYING, RetryDue): _ignore("retry already in flight"),
    (Phase.RETRYING, Resume): _resend,
    (Phase.RETRYING, PingSucceeded): _ignore("retry already in flight"),
}
