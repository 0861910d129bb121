"""The Synapse module: ``on_new_event`` wakes a loop that publishes events in ``stream_ordering`` order.

Order of one batch (why a crash loses nothing):

1. read the stored position and the next ``batch_size`` events after it, up
   to Synapse's persisted-up-to token (the bound Synapse's own appservice
   sender reads to), serialised in the database thread;
2. produce them (key = room ID) and flush: every record acknowledged by all
   in-sync replicas;
3. only then store the new position (compare-and-set against the one read,
   so a backfill that moved it meanwhile wins).

A crash between 2 and 3 publishes that batch again after the restart: at
most ``batch_size`` events twice, each in order. The worker drops replays
per *input offset* only, so such a duplicate reaches the appservices twice.

Only the instance named by ``worker_name`` (default: the main process)
registers anything; ``on_new_event`` fires on every instance that reads the
events replication stream, and is awaited inline on Synapse's event paths,
so here it only sets a flag or starts the loop as a background process. A
poll every ``poll_interval_s`` is the safety net (an event persisted out of
order, a backfill written by the CLI, a failed batch retried).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from appservice_streams_synapse import sql
from appservice_streams_synapse.core import FeedConfig, parse_config
from appservice_streams_synapse.kafka import Publisher

logger = logging.getLogger(__name__)

MAX_RETRY_S = 30


class FeedModule:
    """Loaded by Synapse from ``modules:`` with ``FeedModule(parse_config(config), api)``."""

    def __init__(self, config: FeedConfig, api: Any) -> None:  # api: synapse.module_api.ModuleApi
        self._config = config
        self._api = api
        self._publisher = Publisher(config)
        self._draining = False
        self._again = False
        self._started = False
        self._aliases: dict[str, frozenset[str]] | None = None  # what was published since this start
        self._aliases_due = True
        self._failures = 0
        self._retry_at = 0.0
        if api.worker_name != config.worker_name:
            logger.info(
                "appservice-streams feed: instance %s is not the publishing one (%s); idle",
                api.worker_name or "main",
                config.worker_name or "main",
            )
            return
        api.register_third_party_rules_callbacks(on_new_event=self._on_new_event)
        api.looping_background_call(
            self._kick, config.poll_interval_s * 1000, desc="appservice_streams_feed_poll", run_on_all_instances=True
        )
        api.looping_background_call(
            self._aliases_tick,
            config.aliases_interval_s * 1000,
            desc="appservice_streams_feed_aliases",
            run_on_all_instances=True,
        )
        api.delayed_background_call(0, self._kick, desc="appservice_streams_feed_start")

    @staticmethod
    def parse_config(config: dict[str, Any]) -> FeedConfig:
        return parse_config(config)

    async def _on_new_event(self, event: Any, state_events: Any) -> None:
        self._kick()

    def _aliases_tick(self) -> None:
        self._aliases_due = True
        self._kick()

    def _kick(self) -> None:
        """Start the loop, or make the running one go round once more. Never waits."""
        if self._draining:
            self._again = True
            return
        if time.monotonic() < self._retry_at:
            return
        self._draining = True
        self._api.run_as_background_process("appservice_streams_feed", self._drain)

    async def _drain(self) -> None:
        try:
            while True:
                self._again = False
                if not self._started:
                    await self._start()
                while await self._publish_batch():
                    pass
                if self._aliases_due:
                    await self._publish_aliases()
                if not self._again:
                    break
            self._failures = 0
        except Exception:
            self._failures += 1
            delay = min(MAX_RETRY_S, 2**self._failures)
            self._retry_at = time.monotonic() + delay
            logger.exception("appservice-streams feed: publishing failed; retrying in %d s", delay)
        finally:
            self._draining = False

    def _persisted_upto(self) -> int:
        """Synapse's persisted-up-to token for room events (every lower stream ordering is persisted).

        The one private access of the module: the module API has no public
        way to it, and reading ``MAX(stream_ordering)`` instead could skip an
        event whose lower ordering commits later (Synapse persists rooms
        concurrently). Synapse's appservice sender reads to the same token.
        """
        return int(self._api._store.get_room_max_stream_ordering())

    async def _run(self, desc: str, func: Any, *args: Any) -> Any:
        return await self._api.run_db_interaction(desc, func, *args)

    async def _start(self) -> None:
        feed_id = self._config.position_key
        upto = self._persisted_upto()  # read before the snapshot: every event after it is applied after it
        position, snapshot = await self._run("appservice_streams_feed_start", sql.start, feed_id)
        if position is None:
            await self._api.defer_to_thread(self._publisher.publish, snapshot)
            await self._run("appservice_streams_feed_position", sql.insert_position, feed_id, upto)
            logger.info(
                "appservice-streams feed %s: cold start: local members of %d rooms published; events from %d",
                feed_id,
                len(snapshot),
                upto,
            )
        else:
            logger.info("appservice-streams feed %s: resuming after stream ordering %d", feed_id, position)
        self._started = True

    async def _publish_batch(self) -> bool:
        """One read → produce → flush → store; returns whether the position moved."""
        feed_id = self._config.position_key
        batch = await self._run(
            "appservice_streams_feed_read", sql.read_batch, feed_id, self._persisted_upto(), self._config.batch_size
        )
        if batch.next_position == batch.position:
            return False
        await self._api.defer_to_thread(self._publisher.publish, batch.records)
        stored = await self._run(
            "appservice_streams_feed_position", sql.advance_position, feed_id, batch.position, batch.next_position
        )
        if not stored:
            logger.info("appservice-streams feed %s: position moved meanwhile (a backfill); reading from it", feed_id)
        if batch.aliases_may_have_changed:
            self._aliases_due = True
        return True

    async def _publish_aliases(self) -> None:
        now = await self._run("appservice_streams_feed_aliases", sql.read_aliases)
        records = sql.aliases_records(self._aliases or {}, now)
        await self._api.defer_to_thread(self._publisher.publish, records)
        self._aliases = now
        self._aliases_due = False
