"""The deliverer's scheduler: every (loop state, input) pair, and a world that runs records,
outcomes, rebalances and crashes in any order against the README's promises."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.errors import InvariantBroken
from streams.machine import Input, TxnSucceeded
from streams.matrix import AppserviceID, TxnID
from streams.scheduler import (
    Ack,
    AwaitSettling,
    Command,
    Hold,
    Loop,
    Outcome,
    Overdue,
    Report,
    Scheduler,
    SpawnSettling,
    StartEffects,
    StepOutcomes,
)

A, B = AppserviceID("a"), AppserviceID("b")
PARTITION = {A: 0, B: 1}
MAX_WAIT = 1_000


def ok(n: int) -> Input:
    return TxnSucceeded(TxnID(n))


def scheduler() -> Scheduler[str]:
    return Scheduler(PARTITION.__getitem__, max_wait_ms=MAX_WAIT)


def in_state(loop: Loop) -> Scheduler[str]:
    s = scheduler()
    if loop is Loop.STEPPING:
        s.batch_began()
    return s


# -- every (loop state, input) pair ------------------------------------------------------------


@pytest.mark.parametrize("loop", list(Loop))
def test_an_owned_outcome_at_its_partitions_end_is_free_and_spawns_a_settling_step_only_while_waiting(
    loop: Loop,
) -> None:
    s = in_state(loop)
    commands = s.outcome_arrived((A, ok(1), 5), 5, end_offset=None, end_known=True, now_ms=0)
    assert commands == ([SpawnSettling()] if loop is Loop.WAITING else [])
    assert s.waiting() == 1
    # a second free outcome never spawns a second settling step
    assert s.outcome_arrived((B, ok(2), 5), 5, end_offset=None, end_known=True, now_ms=0) == []


@pytest.mark.parametrize("loop", list(Loop))
@pytest.mark.parametrize(
    ("step_epoch", "epoch_now", "known"), [(5, 6, True), (5, None, True), (None, None, True), (5, 5, False)]
)
def test_an_outcome_of_a_broken_ownership_or_an_unknown_end_goes_through_the_inbox(
    loop: Loop, step_epoch: int | None, epoch_now: int | None, known: bool
) -> None:
    s = in_state(loop)
    commands = s.outcome_arrived((A, ok(1), step_epoch), epoch_now, end_offset=3, end_known=known, now_ms=0)
    assert commands == [Report(A, ok(1))]
    assert s.waiting() == 0


@pytest.mark.parametrize("loop", list(Loop))
def test_an_outcome_behind_a_backlog_waits_for_it(loop: Loop) -> None:
    s = scheduler()
    s.batch_began()
    s.partition_admitted(0, 9, 5)
    s.batch_stepped(5, 5)
    s.batch_ended()
    if loop is Loop.STEPPING:
        s.batch_began()
    assert s.outcome_arrived((A, ok(1), 5), 5, end_offset=15, end_known=True, now_ms=0) == []
    assert s.waiting() == 1


def test_batch_began_while_waiting_steps_and_while_stepping_is_our_bug() -> None:
    s = in_state(Loop.WAITING)
    assert s.batch_began() == []
    assert s.loop is Loop.STEPPING
    with pytest.raises(InvariantBroken):
        s.batch_began()


@pytest.mark.parametrize("name", ["partition_admitted", "batch_stepped", "batch_ended"])
def test_batch_inputs_while_waiting_are_our_bug(name: str) -> None:
    s = in_state(Loop.WAITING)
    calls = {
        "partition_admitted": lambda: s.partition_admitted(0, 1, 1),
        "batch_stepped": lambda: s.batch_stepped(1, 1),
        "batch_ended": s.batch_ended,
    }
    with pytest.raises(InvariantBroken):
        calls[name]()


def test_partition_admitted_takes_its_partitions_free_outcomes_and_those_its_records_free() -> None:
    s = in_state(Loop.WAITING)
    s.outcome_arrived((A, ok(1), 5), 5, end_offset=None, end_known=True, now_ms=0)  # free
    s.batch_began()
    s.partition_admitted(0, 9, 5)
    s.batch_stepped(5, 5)
    s.batch_ended()
    s.outcome_arrived((A, ok(2), 5), 5, end_offset=15, end_known=True, now_ms=0)  # waits for 14
    s.outcome_arrived((B, ok(3), 5), 5, end_offset=None, end_known=True, now_ms=0)  # free, partition 1
    s.batch_began()
    assert s.partition_admitted(0, 13, 5) == []
    assert s.partition_admitted(0, 14, 5) == [StepOutcomes(((A, ok(2)),))]
    assert s.waiting() == 1  # b's, partition 1


def test_partition_admitted_reports_outcomes_whose_ownership_broke() -> None:
    s = in_state(Loop.WAITING)
    s.outcome_arrived((A, ok(1), 5), 5, end_offset=None, end_known=True, now_ms=0)
    s.batch_began()
    assert s.partition_admitted(0, None, 6) == [Report(A, ok(1))]
    assert s.partition_admitted(0, None, None) == []


def test_batch_stepped_takes_every_free_outcome_and_holds_the_loop_behind_an_incomplete_batch() -> None:
    s = in_state(Loop.STEPPING)
    first, commands = s.batch_stepped(5, 5)
    assert commands == []
    s.batch_ended()
    s.outcome_arrived((A, ok(1), 5), 5, end_offset=None, end_known=True, now_ms=0)
    s.outcome_arrived((B, ok(2), 4), 5, end_offset=None, end_known=False, now_ms=0)
    s.batch_began()
    second, commands = s.batch_stepped(5, 5)
    assert commands == [StepOutcomes(((A, ok(1)),)), Hold(first)]
    assert second > first


def test_a_batch_whose_ownership_broke_while_admitting_leaves_its_sends_to_the_resume() -> None:
    s = in_state(Loop.STEPPING)
    step, _ = s.batch_stepped(5, 6)
    assert s.durable(step, "work", 6) == [StartEffects(step, "work", False, None)]


def test_batch_ended_spawns_a_settling_step_for_outcomes_freed_meanwhile() -> None:
    s = in_state(Loop.STEPPING)
    s.batch_stepped(5, 5)
    s.outcome_arrived((A, ok(1), 5), 5, end_offset=None, end_known=True, now_ms=0)
    assert s.batch_ended() == [SpawnSettling()]
    assert s.loop is Loop.WAITING
    assert s.revoking() == [AwaitSettling()]


@pytest.mark.parametrize("loop", list(Loop))
def test_settling_began_steps_free_outcomes_only_while_the_loop_waits(loop: Loop) -> None:
    s = in_state(Loop.WAITING)
    assert s.outcome_arrived((A, ok(1), 5), 5, end_offset=None, end_known=True, now_ms=0) == [SpawnSettling()]
    if loop is Loop.STEPPING:
        s.batch_began()
        assert s.settling_began(5) == (None, [])
        return
    step, commands = s.settling_began(5)
    assert step is not None and commands == [StepOutcomes(((A, ok(1)),))]
    assert s.settling_began(5) == (None, [])  # nothing left
    assert s.durable(step, "work", 5) == [StartEffects(step, "work", True, 5)]
    assert s.effects_started(step, 5) == []  # a settling step acks nothing
    assert s.settling_ended() == []
    assert s.revoking() == []


@pytest.mark.parametrize("loop", list(Loop))
def test_settling_ended_without_a_spawn_is_our_bug(loop: Loop) -> None:
    with pytest.raises(InvariantBroken):
        in_state(loop).settling_ended()


@pytest.mark.parametrize("loop", list(Loop))
def test_durable_and_effects_started_complete_batches_in_order(loop: Loop) -> None:
    s = in_state(Loop.STEPPING)
    first, _ = s.batch_stepped(5, 5)
    s.batch_ended()
    s.batch_began()
    second, _ = s.batch_stepped(5, 5)
    s.batch_ended()
    if loop is Loop.STEPPING:
        s.batch_began()
    assert s.durable(first, "w1", 5) == [StartEffects(first, "w1", True, 5)]
    assert s.durable(second, "w2", 6) == []  # waits for the first to complete
    with pytest.raises(InvariantBroken):
        s.durable(second, "w2", 6)
    with pytest.raises(InvariantBroken):
        s.effects_started(second, 6)
    # the second's sends are decided when it starts: ownership broke meanwhile
    assert s.effects_started(first, 6) == [Ack(first, "w1"), StartEffects(second, "w2", False, 5)]
    with pytest.raises(InvariantBroken):
        s.effects_started(first, 6)
    assert s.effects_started(second, 6) == [Ack(second, "w2")]
    with pytest.raises(InvariantBroken):
        s.durable(99, "w", 6)


@pytest.mark.parametrize("loop", list(Loop))
def test_revoking_waits_only_for_running_settling_steps(loop: Loop) -> None:
    s = in_state(loop)
    assert s.revoking() == []


@pytest.mark.parametrize("loop", list(Loop))
def test_tick_settles_overdue_outcomes(loop: Loop) -> None:
    s = scheduler()
    s.batch_began()
    s.partition_admitted(0, 9, 5)
    s.batch_stepped(5, 5)
    s.batch_ended()
    if loop is Loop.STEPPING:
        s.batch_began()
    s.outcome_arrived((A, ok(1), 5), 5, end_offset=15, end_known=True, now_ms=0)
    assert s.tick(MAX_WAIT - 1) == []
    overdue = s.tick(MAX_WAIT)
    assert overdue[0] == Overdue(((A, ok(1), 5),))
    assert overdue[1:] == ([SpawnSettling()] if loop is Loop.WAITING else [])


# -- a world: records, outcomes, rebalances, crashes in any order ---------------------------------


@dataclass
class Step:
    kind: str
    epoch_began: int | None  # ownership epoch when the batch began (settling: when it stepped)
    epoch_stepped: int | None
    appservices: set[AppserviceID]  # those whose records or outcomes it stepped: it may send to them
    durable: bool = False
    started: bool = False
    acked: bool = False
    delays: bool = False


@dataclass
class Sent:
    appservice_id: AppserviceID
    epoch: int | None


@dataclass
class World:
    """The shell and Kafka around one scheduler, with the checks the README promises."""

    s: Scheduler[int] = field(default_factory=lambda: Scheduler(PARTITION.__getitem__, max_wait_ms=MAX_WAIT))
    count: int = 0  # Faust's rebalancing count
    assigned_at: int | None = 0
    now: int = 0
    ends: dict[int, int] = field(default_factory=lambda: {0: 0, 1: 0})  # inbox end offsets
    read: dict[int, int] = field(default_factory=lambda: {0: 0, 1: 0})  # next offset to take
    stepped_to: dict[int, int] = field(default_factory=lambda: {0: -1, 1: -1})
    steps: dict[int, Step] = field(default_factory=dict)
    writes: list[int] = field(default_factory=list)  # steps produced, not yet acknowledged (in order)
    batch: str = "none"  # none, admitted, stepped, holding
    batch_epoch: int | None = None
    held: int | None = None
    current: int | None = None
    settling: int = 0  # spawned tasks not run
    settling_writes: dict[int, int] = field(default_factory=dict)
    delays: list[int] = field(default_factory=list)  # steps whose retry timers are being produced
    sends: list[Sent] = field(default_factory=list)
    arrived: dict[int, tuple[int, int | None, int, int | None]] = field(
        default_factory=dict
    )  # partition, end, at, epoch
    settled: dict[int, str] = field(default_factory=dict)  # outcome id → "stepped" / "reported"
    next_outcome: int = 0
    acked_batches: list[int] = field(default_factory=list)
    touched: set[AppserviceID] = field(default_factory=set)  # by the step being formed
    draining: bool = False

    def epoch(self) -> int | None:
        return self.count if self.assigned_at == self.count else None

    # what the shell does with commands
    def run(self, commands: list[Command[int]]) -> None:
        for c in commands:
            if isinstance(c, StepOutcomes):
                for appservice_id, result in c.outcomes:
                    self.settle(result, "stepped", appservice_id)
                    self.touched.add(appservice_id)
            elif isinstance(c, Report):
                self.settle(c.result, "reported", c.appservice_id)
            elif isinstance(c, SpawnSettling):
                self.settling += 1
            elif isinstance(c, StartEffects):
                self.start(c)
            elif isinstance(c, Ack):
                step = self.steps[c.step]
                assert step.kind == "batch" and step.durable and step.started and not step.acked
                assert all(self.steps[b].acked for b in self.steps if b < c.step and self.steps[b].kind == "batch")
                step.acked = True
                self.acked_batches.append(c.step)
            elif isinstance(c, Overdue | AwaitSettling):
                pass
            elif isinstance(c, Hold):
                assert self.batch == "stepped"
                self.held = c.step
            else:
                raise AssertionError(c)

    def settle(self, result: Input, how: str, appservice_id: AppserviceID) -> None:
        assert isinstance(result, TxnSucceeded)
        outcome = int(result.txn_id)
        assert outcome not in self.settled, "an outcome settled twice"
        self.settled[outcome] = how
        if how == "stepped":
            partition, end, at, epoch = self.arrived[outcome]
            # only by the owner since the step that sent it; else handed over through the inbox
            assert epoch is not None and epoch == self.epoch()
            # never overtakes the backlog it arrived behind, unless overdue
            assert end is None or self.stepped_to[partition] >= end - 1 or self.now - at >= MAX_WAIT
            assert PARTITION[appservice_id] == partition

    def start(self, c: StartEffects[int]) -> None:
        step = self.steps[c.step]
        assert step.durable and not step.started, "effects before the step is durable"
        step.started = True
        if c.send:
            # only while ownership is unbroken since the step
            assert step.epoch_began is not None
            assert step.epoch_began == step.epoch_stepped == self.epoch() == c.epoch
            if not self.draining:
                self.sends.extend(Sent(appservice_id, c.epoch) for appservice_id in sorted(step.appservices))
        if step.delays:
            self.delays.append(c.step)
        else:
            self.run(self.s.effects_started(c.step, self.epoch()))

    # inputs, each enabled or not
    def record(self, partition: int) -> None:
        self.ends[partition] += 1

    def begin_batch(self) -> bool:
        if self.batch != "none" or all(self.read[p] == self.ends[p] for p in self.ends):
            return False
        self.run(self.s.batch_began())
        self.batch_epoch = self.epoch()
        self.touched = set()
        for p in (0, 1):
            last = self.ends[p] - 1 if self.read[p] < self.ends[p] else None
            commands = self.s.partition_admitted(p, last, self.epoch())
            if last is not None:
                self.stepped_to[p] = max(self.stepped_to[p], last)
                self.read[p] = self.ends[p]
                self.touched.add(A if p == 0 else B)
            self.run(commands)
        self.batch = "admitted"
        return True

    def step_batch(self, delays: bool) -> bool:
        if self.batch != "admitted":
            return False
        step, commands = self.s.batch_stepped(self.batch_epoch, self.epoch())
        epoch = self.epoch()
        self.batch = "stepped"
        self.run(commands)
        self.steps[step] = Step("batch", self.batch_epoch, epoch, set(self.touched), delays=delays)
        self.writes.append(step)
        return True

    def end_batch(self) -> bool:
        if self.batch != "stepped" or (self.held is not None and not self.steps[self.held].acked):
            return False
        self.held = None
        self.run(self.s.batch_ended())
        self.batch = "none"
        return True

    def run_settling(self, delays: bool) -> bool:
        if not self.settling:
            return False
        self.settling -= 1
        step, commands = self.s.settling_began(self.epoch())
        if step is None:
            self.run(self.s.settling_ended())
            return True
        self.touched = set()
        epoch = self.epoch()
        self.run(commands)
        self.steps[step] = Step("settling", epoch, epoch, set(self.touched), delays=delays)
        self.writes.append(step)
        return True

    def acknowledge(self) -> bool:
        if not self.writes:
            return False
        step = self.writes.pop(0)  # Kafka acknowledges in the order produced
        self.steps[step].durable = True
        self.run(self.s.durable(step, step, self.epoch()))
        if self.steps[step].kind == "settling" and not self.steps[step].delays:
            self.run(self.s.settling_ended())
        return True

    def delays_produced(self) -> bool:
        if not self.delays:
            return False
        step = self.delays.pop(0)
        self.run(self.s.effects_started(step, self.epoch()))
        if self.steps[step].kind == "settling":
            self.run(self.s.settling_ended())
        return True

    def send_done(self, known: bool) -> bool:
        if not self.sends:
            return False
        sent = self.sends.pop(0)
        outcome = self.next_outcome
        self.next_outcome += 1
        partition = PARTITION[sent.appservice_id]
        end = self.ends[partition] if known else None
        self.arrived[outcome] = (partition, end, self.now, sent.epoch)
        self.run(
            self.s.outcome_arrived((sent.appservice_id, ok(outcome), sent.epoch), self.epoch(), end, known, self.now)
        )
        return True

    def revoke(self, assign: bool) -> None:
        """A rebalance begins; with ``assign`` the new assignment lands at once."""
        self.count += 1
        self.run(self.s.revoking())
        if assign:
            self.assign()

    def assign(self) -> None:
        self.assigned_at = self.count

    def tick(self, ms: int) -> None:
        self.now += ms
        self.run(self.s.tick(self.now))

    def crash(self) -> None:
        """A new process: nothing held in memory survives; what was not acked is read again."""
        for step in self.steps.values():
            assert not step.acked or step.durable
        unsettled = [o for o in self.arrived if o not in self.settled]
        for o in unsettled:  # their sends are resent after the restart's Resume
            self.settled[o] = "lost in a crash"
        fresh = World(count=self.count + 1, assigned_at=self.count + 1, now=self.now, ends=dict(self.ends))
        fresh.read = dict(self.ends)  # acked or replayed: the replay is the machine's to drop
        fresh.stepped_to = dict(self.stepped_to)
        fresh.next_outcome = self.next_outcome
        fresh.arrived, fresh.settled = self.arrived, self.settled
        self.__dict__.update(fresh.__dict__)

    def drain(self) -> None:
        """Let every pending thing happen (ownership settles), then check every outcome was settled once."""
        self.assign()
        self.draining = True
        for _ in range(1_000):
            progressed = (
                self.step_batch(False)
                or self.acknowledge()
                or self.delays_produced()
                or self.end_batch()
                or self.run_settling(False)
                or self.send_done(True)
                or self.begin_batch()
            )
            if not progressed:
                if self.s.waiting():
                    self.tick(MAX_WAIT)
                    continue
                break
        assert self.batch == "none" and not self.writes and not self.delays and not self.settling
        assert self.s.waiting() == 0
        assert set(self.settled) == set(self.arrived), "an outcome neither stepped nor handed over"
        batches = [s for s, step in self.steps.items() if step.kind == "batch"]
        assert self.acked_batches == batches


# Progress (records, batches, acknowledgements, outcomes) more often than faults, so that runs reach
# two batches in flight, outcomes behind a backlog and settling steps. Each action takes one number.
WEIGHTS = {
    "record": 8,
    "begin_batch": 6,
    "step_batch": 6,
    "end_batch": 6,
    "run_settling": 6,
    "acknowledge": 6,
    "delays_produced": 4,
    "send_done": 8,
    "revoke": 1,
    "assign": 1,
    "tick": 2,
    "crash": 1,
}
ACTIONS = st.tuples(st.sampled_from([name for name, n in WEIGHTS.items() for _ in range(n)]), st.integers(0, 5))
ARGUMENTS = {
    "record": lambda x: (x % 2,),
    "step_batch": lambda x: (x % 2 == 0,),  # with retry timers to produce or not
    "run_settling": lambda x: (x % 2 == 0,),
    "send_done": lambda x: (x != 0,),  # the partition's end known or not
    "revoke": lambda x: (x % 2 == 0,),  # the assignment lands at once or later
    "tick": lambda x: ((1, 100, MAX_WAIT)[x % 3],),
}


def play(world: World, actions: list[tuple[str, int]]) -> None:
    for name, x in actions:
        getattr(world, name)(*ARGUMENTS.get(name, lambda x: ())(x))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACTIONS, min_size=30, max_size=150))
def test_any_order_of_records_outcomes_rebalances_and_crashes_keeps_the_commit_order(
    actions: list[tuple[str, int]],
) -> None:
    world = World()
    play(world, actions)
    world.drain()


def test_the_world_sends_settles_and_acks_on_the_happy_path() -> None:
    world = World()
    world.record(0)
    world.record(1)
    assert world.begin_batch() and world.step_batch(False) and world.end_batch()
    assert world.acknowledge()
    assert len(world.sends) == 2 and world.acked_batches == [0]
    world.record(0)
    assert world.send_done(True)  # behind offset 1 of partition 0 (the next send's appservice: b)
    world.drain()
    assert set(world.settled.values()) == {"stepped"}


def test_outcomes_of_a_revoked_generation_are_handed_over_through_the_inbox() -> None:
    world = World()
    world.record(0)
    world.begin_batch()
    world.step_batch(False)
    world.end_batch()
    world.acknowledge()
    world.revoke(assign=True)
    assert world.send_done(True)
    world.drain()
    assert world.settled == {0: "reported"}


def test_outcomes_waiting_when_a_revocation_comes_are_handed_over_once_due() -> None:
    world = World()
    world.record(1)
    world.begin_batch()
    world.step_batch(False)
    world.end_batch()
    world.acknowledge()
    world.record(1)
    assert world.send_done(True)  # waits for offset 1
    world.revoke(assign=True)
    world.tick(MAX_WAIT)
    world.drain()
    assert world.settled == {0: "reported"}


def test_outcome_types_are_what_the_shell_expects() -> None:
    outcome: Outcome = (A, ok(1), None)
    assert outcome[2] is None
