"""The module's only Kafka code: produce a batch of records and wait until every one is acknowledged.

``publish`` blocks (it flushes), so the module runs it in a thread of
Synapse's reactor pool (``ModuleApi.defer_to_thread``), never on the reactor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Producer

from appservice_streams_synapse.core import FeedConfig, Record, producer_config

logger = logging.getLogger(__name__)


class PublishFailed(Exception):
    """Some record of the batch was not acknowledged; the batch is published again from its start."""


class Publisher:
    def __init__(self, config: FeedConfig) -> None:
        self._config = config
        self._producer: Any = None  # created at first use: no I/O in the constructor

    def publish(self, records: Sequence[Record]) -> None:
        """Produce ``records`` in order and flush.

        Raises:
            PublishFailed: a record failed or was not acknowledged within the
                delivery timeout (librdkafka reports each record by then).
        """
        if not records:
            return
        if self._producer is None:
            # librdkafka's log lines go to Synapse's logging, not to its stderr.
            self._producer = Producer(producer_config(self._config), logger=logging.getLogger(__name__ + ".librdkafka"))
        producer = self._producer
        errors: list[str] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        for key, value in records:
            while True:
                try:
                    producer.produce(self._config.topic, key=key, value=value, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)  # librdkafka's queue is full: let deliveries drain
        remaining = producer.flush(self._config.delivery_timeout_s + 5)
        if remaining or errors:
            # Every record is reported by message.timeout.ms, so the queue is empty: a new producer
            # (a fatal error leaves an idempotent one unusable) cannot race leftovers of this one.
            self._producer = None
            raise PublishFailed(f"{remaining} records unacknowledged, {len(errors)} failed: {errors[:1]}")

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None
