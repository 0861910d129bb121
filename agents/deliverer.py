"""The transaction agent: the inbox, one appservice at a time, into stored txns and sends.

For each batch taken from the inbox: group records by partition, then by
appservice (order kept), run ``streams.delivery.run_step`` with the partition's
event current (so table writes land in the right RocksDB shard and changelog
partition), then start the HTTP sends and produce the retry timers it asked
for. Sends run as background tasks, one in flight per appservice, so a hung
appservice never holds up the batch or any other appservice.

A send's outcome is settled in this process, without a trip through Kafka,
when the worker has owned the appservice's partition without a break since
the step that asked for the send (no rebalance began since): outcomes that
complete together are stepped together, their state written and
acknowledged, then the next sends start. That trip (outcome record → inbox →
fetch → batch) was 78 ms of a ~100 ms cycle per appservice at 2,000 events/s.
Otherwise (a rebalance began: the partition may be someone else's now) the
outcome goes through the inbox as a record keyed by appservice ID, and its
owner settles it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from faust.types import TP

from agents.batching import take_available
from agents.fatal import fatal
from agents.metrics import Metrics
from agents.ownership import Ownership
from agents.pipeline import Pipeline, now_ms
from agents.positions import RESEEK_S, KafkaPartitionLog, PositionGuard
from agents.table_store import TableStore, in_partition, partition_of
from agents.topics import key_partition
from streams.dead_letter import Reason
from streams.delivery import BodyFormat, Send, run_step
from streams.errors import BadRecord, InvariantBroken
from streams.machine import CameUp, Input, MachineConfig, Resume, TxnFailed, WentDown
from streams.matrix import AppserviceID
from streams.observed import undelivered
from streams.outcome import Outcome as HttpOutcome
from streams.outcome import as_input
from streams.records import DelayRecord, decode_inbox_record, encode_delay, encode_outcome
from streams.settlement import MAX_WAIT_MS, Settlement

# A send's outcome as settled in-process: the appservice, the machine input, the epoch of its step.
Outcome = tuple[AppserviceID, Input, int]

log = logging.getLogger(__name__)

# How long to wait before producing an outcome again when Kafka refuses it.
REPORT_RETRY_S = 1.0
# Batches whose changelog records may still be awaiting acknowledgement while
# the next one is stepped. 1 overlaps one batch's acks with the next's work;
# 4 measured worse (p50 at 2,000/s: ~200 ms with 1, ~500 ms with 4): the loop
# then takes smaller batches, and each costs its own changelog records.
MAX_BATCHES_IN_FLIGHT = 1
# How long a revocation waits for settling tasks to hand their records over
# (they await only Kafka, never an appservice).
REVOKE_WAIT_S = 10.0


@dataclass
class Effects:
    """What steps asked the shell to do once their state is durable."""

    sends: list[Send] = field(default_factory=list)
    delays: list[tuple[AppserviceID, DelayRecord]] = field(default_factory=list)


# Settles one outcome of a send: (the send, what the appservice's answer means
# for the machine, the ownership epoch the send was asked for in).
Settle = Callable[[Send, Input, "int | None"], None]


class Senders:
    """At most one HTTP attempt per (appservice, txn id) in this process."""

    def __init__(self, pipeline: Pipeline, settle: Settle, metrics: Metrics | None = None) -> None:
        self._pipeline = pipeline
        self._settle = settle
        self._metrics = metrics
        self._running: dict[tuple[AppserviceID, int], asyncio.Task[None]] = {}

    def start(self, send: Send, epoch: int | None) -> None:
        """Start ``send``; ``epoch`` is the ownership epoch of the step that asked for it (None: unknown)."""
        key = (send.appservice_id, send.txn_id)
        if key in self._running:
            return  # a resume asked again for what is already on the wire
        task = self._pipeline.background.spawn(self._send(send, epoch), f"send {send.appservice_id} txn {send.txn_id}")
        self._running[key] = task
        task.add_done_callback(lambda _: self._running.pop(key, None))

    async def _send(self, send: Send, epoch: int | None) -> None:
        pipeline = self._pipeline
        registration = pipeline.registrations[send.appservice_id]
        outcome: HttpOutcome | None = None
        started = time.monotonic()
        try:
            outcome = await pipeline.client.put_transaction(registration, send.txn_id, send.body)
            result = as_input(outcome, send.txn_id, jitter=random.random())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Our bug, not the appservice's: still report a failure, so the
            # machine backs off and retries instead of waiting forever.
            log.exception("sending txn %s to %s failed inside the worker", send.txn_id, send.appservice_id)
            result = TxnFailed(send.txn_id, f"internal error: {type(exc).__name__}", None, random.random())
        if self._metrics is not None:
            self._metrics.transaction_done(send, outcome, time.monotonic() - started)
        if isinstance(result, TxnFailed):
            log.info(
                "appservice %s txn %s attempt %d failed: %s",
                send.appservice_id,
                send.txn_id,
                send.attempt,
                result.reason,
            )
        self._settle(send, result, epoch)

    async def stop(self) -> None:
        for task in list(self._running.values()):
            task.cancel()


async def report(pipeline: Pipeline, appservice_id: AppserviceID, result: Input) -> None:
    """Produce a machine input to the inbox, retrying until Kafka takes it.

    Giving up would leave the appservice waiting forever on an outcome that
    never comes; retrying is safe because stale or duplicate outcomes are
    ignored by the machine.
    """
    value = encode_outcome(result)  # type: ignore[arg-type]
    while True:
        try:
            await pipeline.inbox.send(key=appservice_id.encode(), value=value)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not produce an outcome for %s; retrying", appservice_id)
            await asyncio.sleep(REPORT_RETRY_S)


async def resume_all(pipeline: Pipeline) -> None:
    for appservice_id, registration in pipeline.registrations.items():
        if registration.url is not None:
            await report(pipeline, appservice_id, Resume())


def install(pipeline: Pipeline) -> Senders:
    settings = pipeline.settings
    app = pipeline.app
    config = MachineConfig(unit_ms=settings.retry_unit_ms)
    store = TableStore(pipeline.appservices, pipeline.changelog)

    async def seek(partition: int, offset: int) -> None:
        await app.consumer.seek(TP(settings.inbox_topic, partition), offset)

    guard = PositionGuard(
        store,
        KafkaPartitionLog(settings.bootstrap_servers, settings.inbox_topic, settings.app_id, settings.kafka_security),
        seek,
    )
    ownership = Ownership(app)
    owned = pipeline.metrics.owned  # what the appservice gauges show: one O(1) update per step
    inbox_partitions: dict[AppserviceID, int] = {}
    formats = {
        r.id: BodyFormat(ephemeral_stable=r.receive_ephemeral, ephemeral_unstable=r.push_ephemeral_msc2409)
        for r in pipeline.registrations.values()
    }

    def inbox_partition(appservice_id: AppserviceID) -> int:
        partition = inbox_partitions.get(appservice_id)
        if partition is None:
            partition = inbox_partitions[appservice_id] = key_partition(appservice_id.encode(), settings.partitions)
        return partition

    def check_partition(appservice_id: AppserviceID, partition: int) -> None:
        expected = inbox_partition(appservice_id)
        if expected != partition:
            # The router and the producer's partitioner disagree (a changed
            # partition count?): stepping here would split the appservice's
            # state across partitions.
            raise InvariantBroken(
                f"inbox partition {partition} holds a record for {appservice_id}, whose partition is {expected}"
                f" with {settings.partitions} partitions; was APPSERVICE_STREAMS_PARTITIONS changed?"
            )

    def step_appservice(appservice_id: AppserviceID, inputs: list[Input], now: int, effects: Effects) -> None:
        """Inside ``partition_of``/``in_partition`` for the appservice's inbox partition."""
        if appservice_id not in formats:
            log.warning("inbox holds %d records for %s, which has no registration", len(inputs), appservice_id)
            return
        result = run_step(appservice_id, inputs, store, now_ms=now, config=config, body_format=formats[appservice_id])
        owned.stepped(appservice_id, inbox_partition(appservice_id), result.state, now)
        effects.sends.extend(result.sends)
        effects.delays.extend((appservice_id, d) for d in result.delays)
        for notice in result.notices:
            if isinstance(notice, WentDown):
                log.warning(
                    "appservice %s is DOWN: txn %s failed (%s); %d items not delivered",
                    appservice_id,
                    notice.txn_id,
                    notice.reason,
                    undelivered(result.state),
                )
            elif isinstance(notice, CameUp):
                log.warning(
                    "appservice %s is UP again after %d ms; %d items not delivered",
                    appservice_id,
                    notice.down_for_ms,
                    undelivered(result.state),
                )
            else:
                log.debug("appservice %s: %s", appservice_id, notice.reason)

    def step_partition(events: list[Any], effects: Effects, outcomes: list[Outcome]) -> None:
        """Step the partition's records, each appservice's settled ``outcomes`` after its records.

        One step per appservice for both: items that arrived while its txn was
        in flight and that txn's outcome form the next txn at once, so they are
        never written as a backlog chunk, and the state is read and written once.
        """
        by_appservice: dict[AppserviceID, list[Input]] = defaultdict(list)
        jitter = random.random()
        for event in events:
            try:
                decoded = decode_inbox_record(event.key, event.value, jitter=jitter)
            except BadRecord as exc:
                pipeline.background.spawn(pipeline.to_dead_letter(event, Reason.MALFORMED, str(exc)), "dead-letter")
                continue
            for appservice_id, input_ in decoded:
                check_partition(appservice_id, event.message.partition)
                by_appservice[appservice_id].append(input_)
        for appservice_id, result in owned_else_report(outcomes):
            by_appservice[appservice_id].append(result)
        now = now_ms()
        for appservice_id, inputs in by_appservice.items():
            step_appservice(appservice_id, inputs, now, effects)

    async def start_effects(effects: Effects, epoch: int | None) -> None:
        """After the step's state is acknowledged: sends on the wire, retry timers in the delay topic.

        Sends only while ownership is unbroken since the step: after a rebalance
        began they are left to the Resume every rebalance ends with, which the
        partition's owner answers by resending what is in flight. Sent from here
        too, a txn could reach the appservice after the owner's next one, and an
        appservice that remembers only its last txn id (matrix-appservice-node)
        would process it twice.
        """
        if not ownership.unbroken(epoch):
            log.info("a rebalance began: %d sends left to the resume after it", len(effects.sends))
        else:
            for send in effects.sends:
                senders.start(send, epoch)
        timers = [
            await pipeline.delay.send(key=appservice_id.encode(), value=encode_delay(record))
            for appservice_id, record in effects.delays
        ]
        await asyncio.gather(*timers)

    # Settling tasks run outside the agent's batches: a revocation waits for
    # them (Faust's own barrier covers only the agent's events).
    outside_batches: set[asyncio.Task[None]] = set()

    def track(task: asyncio.Task[None]) -> None:
        outside_batches.add(task)
        task.add_done_callback(outside_batches.discard)

    @app.on_partitions_assigned.connect  # type: ignore[untyped-decorator]
    async def note_assignment(sender: Any, assigned: Any, **kwargs: Any) -> None:
        ownership.assigned()

    @app.on_partitions_revoked.connect  # type: ignore[untyped-decorator]
    async def finish_outside_batches(sender: Any, revoked: Any, **kwargs: Any) -> None:
        if outside_batches:
            await asyncio.wait(list(outside_batches), timeout=REVOKE_WAIT_S)
        await (await store.produce())

    # Outcomes settled here wait in ``settlement`` until the deliverer has
    # stepped what their inbox partition held when they came (see
    # streams.settlement). Those freed by a batch are stepped with that
    # batch's records of their partition; those free on arrival or overdue
    # wait in ``unsettled`` for the next step: with their partition's records
    # in the loop's next batch, after it, or in a task's when the loop is
    # waiting for records.
    settlement: Settlement[Outcome] = Settlement()
    unsettled: list[Outcome] = []
    loop_busy = False

    def owned_else_report(outcomes: list[Outcome]) -> list[tuple[AppserviceID, Input]]:
        """The outcomes whose send's step still holds ownership; the others are sent through the inbox."""
        kept = []
        for appservice_id, result, epoch in outcomes:
            if ownership.unbroken(epoch):
                kept.append((appservice_id, result))
            else:
                pipeline.background.spawn(report(pipeline, appservice_id, result), "report an outcome")
        return kept

    def take_unsettled(partition: int) -> list[Outcome]:
        """The outcomes free to settle whose appservice's inbox partition is ``partition``, taken out."""
        if not unsettled:
            return []
        taken: list[Outcome] = []
        kept: list[Outcome] = []
        for outcome in unsettled:
            (taken if inbox_partition(outcome[0]) == partition else kept).append(outcome)
        unsettled[:] = kept
        return taken

    def settle(send: Send, result: Input, epoch: int | None) -> None:
        if ownership.unbroken(epoch):
            partition = inbox_partition(send.appservice_id)
            try:
                end = app.consumer.highwater(TP(settings.inbox_topic, partition))
            except Exception as exc:
                log.warning(
                    "no end offset for inbox partition %d (%r): txn %s through the inbox", partition, exc, send.txn_id
                )
            else:
                if settlement.arrived(partition, (send.appservice_id, result, epoch), end, now_ms()):
                    settle_soon([(send.appservice_id, result, epoch)])
                return
        # A rebalance began since the step that asked for this send (the
        # partition may be another worker's now, and only its owner may step
        # the appservice), or the consumer could not say where the partition
        # ends: the owner settles it from the inbox.
        pipeline.background.spawn(report(pipeline, send.appservice_id, result), "report an outcome")

    def settle_soon(outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        unsettled.extend(outcomes)
        if len(unsettled) == len(outcomes) and not loop_busy:
            track(pipeline.background.spawn(settle_while_idle(), "settle outcomes"))

    def step_unsettled(effects: Effects) -> None:
        """Step the outcomes free to settle, for partitions still owned; report the others through the inbox."""
        if not unsettled:
            return  # most batches: no work added to the loop's path
        taken = list(unsettled)
        unsettled.clear()
        by_appservice: dict[AppserviceID, list[Input]] = defaultdict(list)
        for appservice_id, result in owned_else_report(taken):
            by_appservice[appservice_id].append(result)
        now = now_ms()
        for appservice_id, inputs in by_appservice.items():
            with in_partition(inbox_partition(appservice_id)):
                step_appservice(appservice_id, inputs, now, effects)

    async def settle_while_idle() -> None:
        if loop_busy or not unsettled:
            return  # the loop took them, or will
        effects = Effects()
        epoch = ownership.epoch()
        try:
            step_unsettled(effects)
            await (await store.produce())
            await start_effects(effects, epoch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            fatal(exc, "deliverer settling outcomes")

    senders = Senders(pipeline, settle, pipeline.metrics)

    @app.agent(pipeline.inbox, name="deliverer")  # type: ignore[untyped-decorator]
    async def deliver(stream: Any) -> None:
        nonlocal loop_busy
        async for batch in take_available(stream, settings.batch_max, within=settings.batch_within_s):
            loop_busy = True
            try:
                await deliver_batch(batch)
            finally:
                loop_busy = False
            if unsettled:
                track(pipeline.background.spawn(settle_while_idle(), "settle outcomes"))

    async def deliver_batch(batch: list[Any]) -> None:
        by_partition: dict[int, list[Any]] = defaultdict(list)
        for event in batch:
            by_partition[event.message.partition].append(event)
        effects = Effects()
        ackable: list[Any] = []
        try:
            epoch = ownership.epoch()
            for partition, events in by_partition.items():
                with partition_of(events[-1]):
                    admitted, last, done = await guard.admit(events)
                    ackable.extend(done)
                    # Outcomes free once these records are stepped are stepped with them.
                    outcomes = take_unsettled(partition)
                    if last is not None:
                        outcomes.extend(settlement.stepped(partition, last))
                    step_partition(admitted, effects, outcomes)
                    guard.advance(partition, last)  # after the step's writes
            if not ownership.unbroken(epoch):
                epoch = None  # a rebalance began while admitting: the resume after it sends
            step_unsettled(effects)
            acknowledged = await store.produce()
        except Exception as exc:
            fatal(exc, "deliverer")
        # The next batch is stepped while this one's records are acknowledged.
        in_flight[:] = [task for task in in_flight if not task.done()]
        if len(in_flight) >= MAX_BATCHES_IN_FLIGHT:
            await asyncio.wait([in_flight.pop(0)])
        previous = in_flight[-1] if in_flight else None
        in_flight.append(
            pipeline.background.spawn(
                complete(previous, acknowledged, effects, ackable, epoch), "complete a deliverer batch"
            )
        )

    async def complete(
        previous: asyncio.Task[None] | None,
        acknowledged: Awaitable[None],
        effects: Effects,
        ackable: list[Any],
        epoch: int | None,
    ) -> None:
        """Commit order: a batch's state is in Kafka before any txn id it formed goes
        on the wire and before it is acked; batches complete in the order they were taken."""
        try:
            if previous is not None:
                await previous
            await acknowledged
            await start_effects(effects, epoch)
            pipeline.acks.processed(ackable)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            fatal(exc, "deliverer")

    @app.timer(interval=RESEEK_S / 2)  # type: ignore[untyped-decorator]
    async def seek_again() -> None:
        overdue = settlement.overdue(now_ms())
        if overdue:
            # The deliverer did not step their inbox partitions up to where they
            # ended when the outcomes came: far behind, or stuck.
            log.warning(
                "%d send outcomes waited over %d ms for inbox records (appservices %s); settling them now",
                len(overdue),
                MAX_WAIT_MS,
                sorted({appservice_id for appservice_id, _, _ in overdue}),
            )
        settle_soon(overdue)
        try:
            await guard.seek_again()
        except Exception as exc:
            fatal(exc, "deliverer re-read")

    in_flight: list[asyncio.Task[None]] = []
    return senders


__all__ = ["Senders", "install", "report", "resume_all"]
