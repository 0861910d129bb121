"""Stepping appservices for the deliverer: inbox records and settled outcomes into ``run_step``.

Each appservice's inputs of one batch (its records, then its settled
outcomes) make one step, inside its inbox partition (``partition_of`` /
``in_partition``), so table writes land in the right RocksDB shard and
changelog partition. The sends and retry timers a step asks for are
collected in ``Work`` and started by the deliverer once the step is durable.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from agents.pipeline import Pipeline, now_ms
from agents.table_store import TableStore, in_partition
from agents.topics import key_partition
from streams.dead_letter import Reason
from streams.delivery import BodyFormat, Send, run_step
from streams.errors import BadRecord, InvariantBroken
from streams.machine import CameUp, FormSlice, Input, MachineConfig, WentDown
from streams.matrix import AppserviceID
from streams.observed import undelivered
from streams.records import DelayRecord, decode_inbox_record

log = logging.getLogger("agents.deliverer")  # the DOWN/UP lines keep the logger they always had


@dataclass
class Work:
    """What steps asked the shell to do once their state is durable, and the records to ack then."""

    sends: list[Send] = field(default_factory=list)
    delays: list[tuple[AppserviceID, DelayRecord]] = field(default_factory=list)
    ackable: list[Any] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)  # inbox partition → position after the step


class Stepper:
    def __init__(self, pipeline: Pipeline, store: TableStore) -> None:
        self._pipeline = pipeline
        self._store = store
        self._partitions = pipeline.settings.partitions
        self._config = MachineConfig(unit_ms=pipeline.settings.retry_unit_ms)
        self._owned = pipeline.metrics.owned  # what the appservice gauges show: one dict store per step
        self._inbox_partitions: dict[AppserviceID, int] = {}
        self._formats = {
            r.id: BodyFormat(ephemeral_stable=r.receive_ephemeral, ephemeral_unstable=r.push_ephemeral_msc2409)
            for r in pipeline.registrations.values()
        }

    def inbox_partition(self, appservice_id: AppserviceID) -> int:
        partition = self._inbox_partitions.get(appservice_id)
        if partition is None:
            partition = self._inbox_partitions[appservice_id] = key_partition(appservice_id.encode(), self._partitions)
        return partition

    def records(self, events: list[Any], outcomes: list[tuple[AppserviceID, Input]], work: Work) -> None:
        """Step one partition's records, each appservice's settled ``outcomes`` after its records.

        Inside ``partition_of`` for that partition. One step per appservice for
        both: items that arrived while its txn was in flight and that txn's
        outcome form the next txn at once, so they are never written as a
        backlog chunk, and the state is read and written once.

        Raises:
            InvariantBroken: a record is in another partition than its appservice's.
        """
        by_appservice: dict[AppserviceID, list[Input]] = defaultdict(list)
        jitter = random.random()
        for event in events:
            try:
                decoded = decode_inbox_record(event.key, event.value, jitter=jitter, headers=event.headers)
            except BadRecord as exc:
                pipeline = self._pipeline
                pipeline.background.spawn(pipeline.to_dead_letter(event, Reason.MALFORMED, str(exc)), "dead-letter")
                continue
            for appservice_id, input_ in decoded:
                self._check_partition(appservice_id, event.message.partition)
                by_appservice[appservice_id].append(input_)
        for appservice_id, result in outcomes:
            by_appservice[appservice_id].append(result)
        now = now_ms()
        for appservice_id, inputs in by_appservice.items():
            self._step(appservice_id, inputs, now, work)

    def outcomes(self, outcomes: list[tuple[AppserviceID, Input]], work: Work) -> None:
        """Step settled outcomes without records, each in its appservice's inbox partition."""
        if not outcomes:
            return
        by_appservice: dict[AppserviceID, list[Input]] = defaultdict(list)
        for appservice_id, result in outcomes:
            by_appservice[appservice_id].append(result)
        now = now_ms()
        for appservice_id, inputs in by_appservice.items():
            with in_partition(self.inbox_partition(appservice_id)):
                self._step(appservice_id, inputs, now, work)

    def _check_partition(self, appservice_id: AppserviceID, partition: int) -> None:
        expected = self.inbox_partition(appservice_id)
        if expected != partition:
            # The router and the producer's partitioner disagree (a changed
            # partition count?): stepping here would split the appservice's
            # state across partitions.
            raise InvariantBroken(
                f"inbox partition {partition} holds a record for {appservice_id}, whose partition is {expected}"
                f" with {self._partitions} partitions; was APPSERVICE_STREAMS_PARTITIONS changed?"
            )

    def _step(self, appservice_id: AppserviceID, inputs: list[Input], now: int, work: Work) -> None:
        """Inside ``partition_of``/``in_partition`` for the appservice's inbox partition."""
        body_format = self._formats.get(appservice_id)
        if body_format is None:
            log.warning("inbox holds %d records for %s, which has no registration", len(inputs), appservice_id)
            return
        result = run_step(appservice_id, inputs, self._store, now_ms=now, config=self._config, body_format=body_format)
        self._owned.stepped(appservice_id, self.inbox_partition(appservice_id), result.state, result.oldest_ms)
        work.sends.extend(result.sends)
        work.delays.extend((appservice_id, d) for d in result.delays)
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
            elif isinstance(notice, FormSlice):
                log.info(
                    "appservice %s: txn %s holds %s (events, ephemeral, to-device, device) of refused txn %s",
                    appservice_id,
                    notice.txn.txn_id,
                    list(notice.txn.counts),
                    notice.source,
                )
            else:
                log.debug("appservice %s: %s", appservice_id, notice.reason)
