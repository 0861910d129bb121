"""What every agent of a worker shares: the ``Pipeline`` (app, topics, table, clients, metrics).

Built by ``agents.worker.create_pipeline``; the agents receive it and register
themselves on its Faust app. This module imports no agent, so each agent can
import it without a cycle.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from agents.appservice_http import AppserviceClient
from agents.background import BackgroundTasks
from agents.changelog_producer import ChangelogProducer
from agents.metrics import Metrics
from agents.metrics_http import Health, MetricsServer
from agents.positions import AckFilter
from streams.dead_letter import Reason, dead_letter, refused_transaction
from streams.interest import Interest
from streams.matrix import AppserviceID
from streams.registration import Registration
from streams.settings import Settings

log = logging.getLogger(__name__)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Pipeline:
    settings: Settings
    app: Any  # faust.App (untyped)
    registrations: dict[AppserviceID, Registration]
    interest: Interest
    inbox: Any
    delay: Any
    dead_letter: Any
    appservices: Any
    client: AppserviceClient
    acks: AckFilter
    changelog: ChangelogProducer
    metrics: Metrics
    health: Health = field(default_factory=Health)
    background: BackgroundTasks = field(default_factory=BackgroundTasks)
    metrics_server: MetricsServer | None = None  # started by the command, before the worker

    async def to_dead_letter(self, event: Any, reason: Reason, detail: str) -> None:
        """Divert a record nobody can read, with where it came from and why."""
        message = event.message
        log.warning(
            "dead-lettered %s[%d]@%d (%s): %s", message.topic, message.partition, message.offset, reason, detail
        )
        self.metrics.dead_lettered(reason)
        letter = dead_letter(message.topic, message.partition, message.offset, event.value, reason, detail)
        await self.dead_letter.send(key=event.key, value=letter.value, headers=letter.headers)

    async def dead_letter_txn(self, appservice_id: AppserviceID, txn_id: int, body: bytes, detail: str) -> None:
        """Write a transaction an appservice refused for good to the dead-letter topic; return once Kafka has it.

        Raises: whatever the producer raises (the caller retries: the machine waits for this).
        """
        letter = refused_transaction(appservice_id, txn_id, body, detail)
        acked = await self.dead_letter.send(key=appservice_id.encode(), value=letter.value, headers=letter.headers)
        await acked
        self.metrics.dead_lettered(Reason.REFUSED_BY_APPSERVICE)
        log.warning("dead-lettered txn %s of appservice %s (%s): %s", txn_id, appservice_id, len(body), detail)
