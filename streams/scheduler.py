"""The deliverer's scheduler, sans-I/O: when outcomes are stepped, when effects start, what is acked.

The deliverer (``agents.deliverer``) turns inbox records into steps of
``streams.delivery.run_step``. This class decides everything around those
steps; the shell carries out its commands and reports back. Like
``streams.machine``, it reads no clock and no Kafka state: the time, the
partition's end offset and the ownership epoch *now* (a token that changes
with every rebalance; None between a revocation and the next assignment,
see ``agents.ownership``) come with each input.

Commit order (README, "Commit order"): a step's state is durable in Kafka
before any send it formed starts and before its inbox records are acked;
batches complete (effects started, records acked) in the order they were
taken; settling steps (outcomes without records) are never acked and start
their effects as soon as they are durable.

Sends start only while ownership is unbroken since the step that formed them:
after a rebalance began they are left to the ``Resume`` every rebalance ends
with (``StartEffects.send`` is False).

A send's outcome is settled in this process only if ownership is unbroken
since its step, and only after every record its appservice's inbox partition
held when it came was stepped (``streams.settlement``): it is then stepped
with its partition's records in the loop's next batch, or, while the loop
waits for records, in a settling step of its own. Otherwise it goes through
the inbox (``Report``), where the partition's owner settles it.

Inputs are methods; each returns the commands to carry out, in order.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from streams.errors import InvariantBroken
from streams.machine import Input
from streams.matrix import AppserviceID
from streams.settlement import MAX_WAIT_MS, Settlement

E = TypeVar("E")

# A send's outcome: the appservice, the machine input, the epoch of the step that formed the send.
Epoch = int | None
Outcome = tuple[AppserviceID, Input, Epoch]

# Batches whose completion may be pending while the next one is stepped (see agents.deliverer).
MAX_BATCHES_IN_FLIGHT = 1


class Loop(enum.Enum):
    """What the deliverer's loop is doing."""

    WAITING = "waiting"  # for records; outcomes free to settle get a settling step
    STEPPING = "stepping"  # a batch: outcomes free to settle join it


class StepKind(enum.Enum):
    BATCH = "batch"  # inbox records (and outcomes): acked, completed in order
    SETTLING = "settling"  # outcomes only: nothing to ack


@dataclass(frozen=True, slots=True)
class Report:
    """Produce ``result`` to the inbox, keyed by the appservice: its partition's owner settles it."""

    appservice_id: AppserviceID
    result: Input


@dataclass(frozen=True, slots=True)
class StepOutcomes:
    """Step these outcomes (each in its appservice's inbox partition), after the records stepped with them."""

    outcomes: tuple[tuple[AppserviceID, Input], ...]


@dataclass(frozen=True, slots=True)
class SpawnSettling:
    """Run ``settling_began`` soon, outside the loop (and ``settling_ended`` after)."""


@dataclass(frozen=True, slots=True)
class Hold:
    """The loop takes no next batch until step ``step`` completed."""

    step: int


@dataclass(frozen=True, slots=True)
class StartEffects(Generic[E]):
    """Step ``step`` is durable: start its sends if ``send`` (else leave them to the resume), produce its
    retry timers, then call ``effects_started``."""

    step: int
    effects: E
    send: bool
    epoch: Epoch  # the step's: the sends' outcomes carry it


@dataclass(frozen=True, slots=True)
class Ack(Generic[E]):
    """Ack the inbox records of batch ``step``: its state is durable and its effects started."""

    step: int
    effects: E


@dataclass(frozen=True, slots=True)
class AwaitSettling:
    """A revocation: wait (bounded) for the settling steps running, which hand their records over."""


@dataclass(frozen=True, slots=True)
class Overdue:
    """Outcomes that waited over ``MAX_WAIT_MS`` for their partition's records; settled now anyway."""

    outcomes: tuple[Outcome, ...]


Command = Report | StepOutcomes | SpawnSettling | Hold | StartEffects[E] | Ack[E] | AwaitSettling | Overdue


@dataclass(slots=True)
class _Step(Generic[E]):
    kind: StepKind
    epoch: Epoch
    effects: E | None = None
    durable: bool = False
    started: bool = False  # StartEffects issued
    done: bool = False  # effects_started received


class Scheduler(Generic[E]):
    """One per worker. ``partition_of`` maps an appservice to its inbox partition (pure)."""

    def __init__(self, partition_of: Callable[[AppserviceID], int], max_wait_ms: int = MAX_WAIT_MS) -> None:
        self._partition_of = partition_of
        self._settlement: Settlement[Outcome] = Settlement(max_wait_ms)
        self._unsettled: list[Outcome] = []  # free to settle, in arrival order
        self.loop = Loop.WAITING
        self._steps: dict[int, _Step[E]] = {}
        self._batches: deque[int] = deque()  # batches not yet completed, in order taken
        self._next_step = 0
        self._settling = 0  # settling steps spawned and not ended

    # -- what the shell may ask ------------------------------------------------

    def waiting(self) -> int:
        """Outcomes held here: waiting for records or free to settle."""
        return self._settlement.waiting() + len(self._unsettled)

    # -- inputs ------------------------------------------------------------------

    def outcome_arrived(
        self, outcome: Outcome, epoch_now: Epoch, end_offset: int | None, end_known: bool, now_ms: int
    ) -> list[Command[E]]:
        """A send finished. ``end_offset``: the inbox partition's end as the consumer knows it
        (``end_known`` False: the consumer could not say)."""
        appservice_id, result, epoch = outcome
        if epoch != epoch_now or epoch is None or not end_known:
            return [Report(appservice_id, result)]
        if self._settlement.arrived(self._partition_of(appservice_id), outcome, end_offset, now_ms):
            return self._free([outcome])
        return []

    def batch_began(self) -> list[Command[E]]:
        if self.loop is not Loop.WAITING:
            raise InvariantBroken("a batch began while the loop was stepping one")
        self.loop = Loop.STEPPING
        return []

    def partition_admitted(self, partition: int, last: int | None, epoch_now: Epoch) -> list[Command[E]]:
        """The batch's new records of ``partition`` (up to ``last``) are about to be stepped:
        the outcomes to step with them (one ``StepOutcomes``) and those to report."""
        self._in(Loop.STEPPING, "partition_admitted")
        outcomes = self._take_unsettled(partition)
        if last is not None:
            outcomes.extend(self._settlement.stepped(partition, last))
        return self._owned_else_report(outcomes, epoch_now)

    def batch_stepped(self, epoch_at_start: Epoch, epoch_now: Epoch) -> tuple[int, list[Command[E]]]:
        """The batch's partitions were stepped: the outcomes free to settle join it; then the shell hands
        its writes to the producer. Returns the batch's step id."""
        self._in(Loop.STEPPING, "batch_stepped")
        epoch = epoch_at_start if epoch_at_start == epoch_now else None  # broken while admitting
        commands = self._step_unsettled(epoch_now)
        step = self._new_step(StepKind.BATCH, epoch)
        if len(self._batches) - 1 >= MAX_BATCHES_IN_FLIGHT:  # earlier batches not completed
            commands.append(Hold(self._batches[0]))
        return step, commands

    def batch_ended(self) -> list[Command[E]]:
        """The loop is done with the batch (stepped and produced, or it failed)."""
        self._in(Loop.STEPPING, "batch_ended")
        self.loop = Loop.WAITING
        return self._spawn() if self._unsettled else []

    def settling_began(self, epoch_now: Epoch) -> tuple[int | None, list[Command[E]]]:
        """A spawned settling task runs: the step id of its settling step (None: nothing to do,
        the loop took the outcomes or will) and its commands."""
        if self.loop is Loop.STEPPING or not self._unsettled:
            return None, []
        commands = self._step_unsettled(epoch_now)
        return self._new_step(StepKind.SETTLING, epoch_now), commands

    def settling_ended(self) -> list[Command[E]]:
        if self._settling <= 0:
            raise InvariantBroken("a settling task ended that was never spawned")
        self._settling -= 1
        return []

    def durable(self, step: int, effects: E, epoch_now: Epoch) -> list[Command[E]]:
        """Kafka acknowledged the step's writes (and every earlier step's)."""
        state = self._step(step)
        if state.durable:
            raise InvariantBroken(f"step {step} became durable twice")
        state.durable = True
        state.effects = effects
        if state.kind is StepKind.SETTLING:
            return [self._start(step, state, epoch_now)]
        return self._start_batches(epoch_now)

    def effects_started(self, step: int, epoch_now: Epoch) -> list[Command[E]]:
        """The step's sends started and its retry timers were acknowledged."""
        state = self._step(step)
        if not state.started or state.done:
            raise InvariantBroken(f"effects of step {step} reported started out of turn")
        state.done = True
        if state.kind is StepKind.SETTLING:
            del self._steps[step]
            return []
        if not self._batches or self._batches[0] != step:
            raise InvariantBroken(f"batch {step} completed out of order")
        self._batches.popleft()
        del self._steps[step]
        assert state.effects is not None
        return [Ack(step, state.effects), *self._start_batches(epoch_now)]

    def revoking(self) -> list[Command[E]]:
        """Partitions are being revoked: what to wait for before the shell flushes the store."""
        return [AwaitSettling()] if self._settling else []

    def tick(self, now_ms: int) -> list[Command[E]]:
        """Periodically: outcomes that waited too long for their records are settled anyway."""
        overdue = self._settlement.overdue(now_ms)
        if not overdue:
            return []
        return [Overdue(tuple(overdue)), *self._free(overdue)]

    # -- internals -----------------------------------------------------------------

    def _in(self, loop: Loop, what: str) -> None:
        if self.loop is not loop:
            raise InvariantBroken(f"{what} while the loop is {self.loop.value}")

    def _step(self, step: int) -> _Step[E]:
        state = self._steps.get(step)
        if state is None:
            raise InvariantBroken(f"no step {step}")
        return state

    def _new_step(self, kind: StepKind, epoch: Epoch) -> int:
        step = self._next_step
        self._next_step += 1
        self._steps[step] = _Step(kind, epoch)
        if kind is StepKind.BATCH:
            self._batches.append(step)
        return step

    def _start(self, step: int, state: _Step[E], epoch_now: Epoch) -> StartEffects[E]:
        state.started = True
        assert state.effects is not None
        return StartEffects(step, state.effects, state.epoch is not None and state.epoch == epoch_now, state.epoch)

    def _start_batches(self, epoch_now: Epoch) -> list[Command[E]]:
        """Start the oldest batch's effects once it is durable and nothing before it is pending."""
        if not self._batches:
            return []
        head = self._steps[self._batches[0]]
        if head.durable and not head.started:
            return [self._start(self._batches[0], head, epoch_now)]
        return []

    def _free(self, outcomes: list[Outcome]) -> list[Command[E]]:
        was_empty = not self._unsettled
        self._unsettled.extend(outcomes)
        return self._spawn() if was_empty and self.loop is Loop.WAITING else []

    def _spawn(self) -> list[Command[E]]:
        self._settling += 1
        return [SpawnSettling()]

    def _take_unsettled(self, partition: int) -> list[Outcome]:
        if not self._unsettled:
            return []
        taken: list[Outcome] = []
        kept: list[Outcome] = []
        for outcome in self._unsettled:
            (taken if self._partition_of(outcome[0]) == partition else kept).append(outcome)
        self._unsettled = kept
        return taken

    def _step_unsettled(self, epoch_now: Epoch) -> list[Command[E]]:
        if not self._unsettled:
            return []
        taken, self._unsettled = self._unsettled, []
        return self._owned_else_report(taken, epoch_now)

    @staticmethod
    def _owned_else_report(outcomes: list[Outcome], epoch_now: Epoch) -> list[Command[E]]:
        if not outcomes:
            return []
        kept: list[tuple[AppserviceID, Input]] = []
        commands: list[Command[E]] = []
        for appservice_id, result, epoch in outcomes:
            if epoch_now is not None and epoch == epoch_now:
                kept.append((appservice_id, result))
            else:
                commands.append(Report(appservice_id, result))
        if kept:
            commands.append(StepOutcomes(tuple(kept)))
        return commands
