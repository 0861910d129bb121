"""The transaction agent: the inbox, one appservice at a time, into stored txns and sends.

For each batch taken from the inbox: group records by partition, admit the new
ones (``agents.positions``), step each partition's appservices
(``agents.stepper``) with the partition's event current, hand the writes to
the producer, and complete the batch once Kafka has them: start the HTTP sends
and retry timers, then ack. Sends run as background tasks, one in flight per
appservice, so a hung appservice never holds up the batch or any other.

Every decision around that (which outcomes join which step, when effects
start, ownership epochs, what a revocation waits for, settling here vs.
through the inbox) is ``streams.scheduler.Scheduler``'s; this shell turns
Faust, aiokafka and table events into its inputs and carries out its commands.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Coroutine
from typing import Any

from faust.types import TP

from agents.batching import take_available
from agents.fatal import fatal
from agents.ownership import Ownership
from agents.pipeline import Pipeline, now_ms
from agents.positions import RESEEK_S, KafkaPartitionLog, PositionGuard
from agents.senders import Senders, report
from agents.stepper import Stepper, Work
from agents.table_store import TableStore, partition_of
from streams.delivery import Send
from streams.machine import Input
from streams.matrix import AppserviceID
from streams.records import encode_delay
from streams.scheduler import (
    Ack,
    AwaitSettling,
    Command,
    Hold,
    Overdue,
    Report,
    Scheduler,
    SpawnSettling,
    StartEffects,
    StepOutcomes,
)
from streams.settlement import MAX_WAIT_MS
from streams.stalls import StallWatch

log = logging.getLogger(__name__)

# How long a revocation waits for settling tasks to hand their records over
# (they await only Kafka, never an appservice).
REVOKE_WAIT_S = 10.0


def install(pipeline: Pipeline) -> Senders:
    return Deliverer(pipeline).senders


async def or_exit(work: Awaitable[None], where: str = "deliverer") -> None:
    """Await ``work``; any error but a cancellation ends the worker without acking (``agents.fatal``)."""
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        fatal(exc, where)


def log_overdue(command: Overdue) -> None:
    # The deliverer did not step their inbox partitions up to where they ended when the outcomes came:
    # far behind, or stuck.
    log.warning(
        "%d send outcomes waited over %d ms for inbox records (appservices %s); settling them now",
        len(command.outcomes),
        MAX_WAIT_MS,
        sorted({appservice_id for appservice_id, _, _ in command.outcomes}),
    )


class Deliverer:
    def __init__(self, pipeline: Pipeline) -> None:
        s = self._settings = pipeline.settings
        self._pipeline, self._app = pipeline, pipeline.app
        self._store = TableStore(pipeline.appservices, pipeline.changelog)
        partition_log = KafkaPartitionLog(s.bootstrap_servers, s.inbox_topic, s.app_id, s.kafka_security)
        self._guard = PositionGuard(self._store, partition_log, self._seek_inbox)
        self._ownership = Ownership(self._app)
        self._stepper = Stepper(pipeline, self._store)
        self._scheduler: Scheduler[Work] = Scheduler(self._stepper.inbox_partition)
        self._stalls = StallWatch()
        self._settling: set[asyncio.Task[None]] = set()  # what a revocation waits for
        self._completed: dict[int, asyncio.Future[None]] = {}  # batch step → acked
        self.senders = Senders(pipeline, self._settle, pipeline.metrics)
        self._app.on_partitions_assigned.connect(self._assigned)
        self._app.on_partitions_revoked.connect(self._revoked)
        self._app.agent(pipeline.inbox, name="deliverer")(self._deliver)
        self._app.timer(interval=RESEEK_S / 2)(self._tick)

    def _inbox_partitions(self, tps: Any) -> list[int]:
        return [tp.partition for tp in tps if tp.topic == self._settings.inbox_topic]

    async def _seek_inbox(self, partition: int, offset: int) -> None:
        """Read inbox ``partition`` again from ``offset`` (Faust's seek also moves its read offset back)."""
        await self._app.consumer.seek(TP(self._settings.inbox_topic, partition), offset)

    async def _assigned(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        self._ownership.assigned()
        self._stalls.owned(self._inbox_partitions(assigned), time.monotonic())

    async def _revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        if AwaitSettling() in self._scheduler.revoking() and self._settling:
            await asyncio.wait(list(self._settling), timeout=REVOKE_WAIT_S)
        await (await self._store.produce())

    def _settle(self, send: Send, result: Input, epoch: int | None) -> None:
        """A send finished (``Senders`` calls this): where its inbox partition ends now, for the scheduler."""
        end, known = None, False
        if self._ownership.unbroken(epoch):
            partition = self._stepper.inbox_partition(send.appservice_id)
            try:
                end, known = self._app.consumer.highwater(TP(self._settings.inbox_topic, partition)), True
            except Exception as exc:
                log.warning(
                    "no end offset for inbox partition %d (%r): txn %s through the inbox", partition, exc, send.txn_id
                )
        outcome = (send.appservice_id, result, epoch)
        self._run(self._scheduler.outcome_arrived(outcome, self._ownership.epoch(), end, known, now_ms()))

    async def _deliver(self, stream: Any) -> None:
        async for batch in take_available(stream, self._settings.batch_max, within=self._settings.batch_within_s):
            self._run(self._scheduler.batch_began())
            try:
                await self._deliver_batch(batch)
            finally:
                self._run(self._scheduler.batch_ended())

    async def _deliver_batch(self, batch: list[Any]) -> None:
        by_partition: dict[int, list[Any]] = defaultdict(list)
        for event in batch:
            by_partition[event.message.partition].append(event)
        arrived = time.monotonic()
        for partition in by_partition:
            self._stalls.arrived(partition, arrived)
        work = Work()
        try:
            epoch = self._ownership.epoch()
            for partition, events in by_partition.items():
                with partition_of(events[-1]):
                    admitted, last, done = await self._guard.admit(events)
                    work.ackable.extend(done)
                    if last is not None:
                        work.positions[partition] = last
                    commands = self._scheduler.partition_admitted(partition, last, self._ownership.epoch())
                    self._stepper.records(admitted, self._run(commands), work)
                    self._guard.advance(partition, last)  # after the step's writes
            step, commands = self._scheduler.batch_stepped(epoch, self._ownership.epoch())
            self._stepper.outcomes(self._run(commands), work)
            acknowledged = await self._store.produce()
        except Exception as exc:
            fatal(exc, "deliverer")
        self._completed[step] = asyncio.get_running_loop().create_future()
        self._pipeline.background.spawn(or_exit(self._complete(step, acknowledged, work)), "complete a batch")
        for hold in (c for c in commands if isinstance(c, Hold)):  # the next batch is stepped while this completes
            if hold.step in self._completed:
                await asyncio.shield(self._completed[hold.step])

    async def _complete(self, step: int, acknowledged: Any, work: Work) -> None:
        await acknowledged
        self._run(self._scheduler.durable(step, work, self._ownership.epoch()))

    async def _settle_outcomes(self) -> None:
        """Outcomes free to settle while the loop waits for records: a settling step of their own."""
        step, commands = self._scheduler.settling_began(self._ownership.epoch())
        if step is None:
            return  # the loop took them, or will
        work, awaits = Work(), list[Coroutine[Any, Any, None]]()
        self._stepper.outcomes(self._run(commands), work)
        await (await self._store.produce())
        self._run(self._scheduler.durable(step, work, self._ownership.epoch()), awaits)
        for produce_delays in awaits:
            await produce_delays

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._settling.discard(task)
        self._scheduler.settling_ended()

    def _start_effects(self, command: StartEffects[Work], awaits: list[Coroutine[Any, Any, None]] | None) -> None:
        # ``send`` is False once a rebalance began since the step: the Resume every rebalance ends with
        # resends (from here too, a txn could reach the appservice after its owner's next one).
        work = command.effects
        if not command.send:
            log.info("a rebalance began: %d sends left to the resume after it", len(work.sends))
        else:
            for send in work.sends:
                self.senders.start(send, command.epoch)
        if not work.delays:
            self._run(self._scheduler.effects_started(command.step, self._ownership.epoch()))
        elif awaits is not None:
            awaits.append(self._produce_delays(command))
        else:
            self._pipeline.background.spawn(or_exit(self._produce_delays(command)), "produce retry timers")

    async def _produce_delays(self, command: StartEffects[Work]) -> None:
        delay = self._pipeline.delay
        timers = [await delay.send(key=a.encode(), value=encode_delay(d)) for a, d in command.effects.delays]
        await asyncio.gather(*timers)
        self._run(self._scheduler.effects_started(command.step, self._ownership.epoch()))

    def _run(
        self, commands: list[Command[Work]], awaits: list[Coroutine[Any, Any, None]] | None = None
    ) -> list[tuple[AppserviceID, Input]]:
        """Carry out ``commands``; return the outcomes to step (``StepOutcomes``). With ``awaits``, the
        retry timers to produce are left there for the caller to await instead of a task's."""
        stepped: list[tuple[AppserviceID, Input]] = []
        background = self._pipeline.background
        for command in commands:
            if isinstance(command, StepOutcomes):
                stepped.extend(command.outcomes)
            elif isinstance(command, Report):
                background.spawn(report(self._pipeline, command.appservice_id, command.result), "report an outcome")
            elif isinstance(command, StartEffects):
                self._start_effects(command, awaits)
            elif isinstance(command, Ack):
                acks = self._pipeline.acks
                acks.processed(command.effects.ackable)
                for partition, last in command.effects.positions.items():
                    acks.processed_through(TP(self._settings.inbox_topic, partition), last)
                completed = self._completed.pop(command.step, None)
                if completed is not None and not completed.done():
                    completed.set_result(None)
            elif isinstance(command, SpawnSettling):
                task = background.spawn(or_exit(self._settle_outcomes(), "deliverer settling"), "settle outcomes")
                self._settling.add(task)
                task.add_done_callback(self._settled)
            elif isinstance(command, Overdue):
                log_overdue(command)
        return stepped

    async def _tick(self) -> None:
        self._run(self._scheduler.tick(now_ms()))
        try:
            await self._guard.seek_again()
            await self._read_stalled_again()
        except Exception as exc:
            fatal(exc, "deliverer re-read")

    async def _read_stalled_again(self) -> None:
        """Seek inbox partitions gone quiet with records left to their committed offset (``streams.stalls``)."""
        consumer, now = self._app.consumer, time.monotonic()
        owned = self._inbox_partitions(consumer.assignment())
        if self._app.rebalancing or self._ownership.epoch() is None:
            # Faust seeks every partition itself when the rebalance ends; each is quiet from then on.
            self._stalls.owned(owned, now)
            return
        inbox = self._settings.inbox_topic
        ends = {partition: self._end_offset(TP(inbox, partition)) for partition in owned}
        committed = {partition: consumer._committed_offset.get(TP(inbox, partition)) for partition in owned}
        # Faust's seek never yields (aiokafka's is synchronous): no revocation comes between the assignment
        # read above and these seeks, so each partition sought is still assigned.
        for partition, offset in self._stalls.stalled(now, ends, committed, self._guard.rereading()):
            log.warning(
                "inbox partition %d: no record for %.0f s, and its log ends at %s past the committed offset %d;"
                " reading it again from there (Faust drops records it fetched around a rebalance)",
                partition,
                self._stalls.quiet_s,
                ends[partition],
                offset,
            )
            await self._seek_inbox(partition, offset)

    def _end_offset(self, tp: TP) -> int | None:
        try:
            end = self._app.consumer.highwater(tp)
        except Exception:  # aiokafka: not assigned any more, or nothing fetched yet
            return None
        return None if end is None else int(end)


__all__ = ["Deliverer", "install"]
