"""The producer API homeservers use to feed ``matrix.events``, on confluent-kafka.

Records are keyed by room ID and partitioned with ``murmur2_random``: the
hash Java clients and aiokafka (which Faust reads with) use, so a room's
events land on the partition the router's room table expects. librdkafka's
default (CRC32) would scatter them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaException, Producer

from agents.kafka_config import producer_config
from streams import envelope
from streams.errors import BadRecord, KafkaRequestFailed
from streams.kafka_settings import PLAINTEXT, KafkaSecurity

log = logging.getLogger(__name__)


class EventProducer:
    """Write envelopes to the input topic. Not thread-safe; one per thread."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = "matrix.events",
        security: KafkaSecurity = PLAINTEXT,
        **config: Any,
    ) -> None:
        """``security``: TLS/SASL (``streams.kafka_settings.security_from_environment`` reads the ``KAFKA_*``
        variables); ``config``: more librdkafka settings. acks=all and idempotence cannot be turned off."""
        self.topic = topic
        self._producer = Producer(
            producer_config(bootstrap_servers, security, **{"partitioner": "murmur2_random", "linger.ms": 2, **config})
        )
        self._errors: list[str] = []

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))

    def _produce(self, key: str, value: bytes) -> None:
        """Raises: KafkaRequestFailed: librdkafka refused the record at once (e.g. over its ``message.max.bytes``)."""
        while True:
            try:
                self._producer.produce(self.topic, key=key.encode(), value=value, on_delivery=self._delivered)
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain
            except KafkaException as exc:
                raise KafkaRequestFailed(f"{self.topic}: record refused: {exc}") from exc

    def send_event(self, event: Mapping[str, Any]) -> None:
        """Queue one client-format room event.

        Raises:
            BadRecord: the event lacks a required field (named in the message).
        """
        raw = envelope.encode("event", event=dict(event))
        envelope.decode(raw)  # refuse here what the router would dead-letter
        self._produce(str(event["room_id"]), raw)

    def send_room_aliases(self, room_id: str, aliases: Iterable[str]) -> None:
        self._produce(room_id, envelope.encode("room_aliases", room_id=room_id, aliases=list(aliases)))

    def send_ephemeral(self, edu: Mapping[str, Any]) -> None:
        """Queue a typing, receipt or presence EDU. Raises: BadRecord, naming the field."""
        self.send_envelope(envelope.encode("ephemeral", edu=dict(edu)))

    def send_to_device(self, message: Mapping[str, Any]) -> None:
        """Queue a to-device message (with ``to_user_id``, ``to_device_id``). Raises: BadRecord."""
        self.send_envelope(envelope.encode("to_device", message=dict(message)))

    def send_device_list_change(self, user_id: str, change: str) -> None:
        """Queue an MSC3202 device-list change (``changed`` or ``left``). Raises: BadRecord."""
        self.send_envelope(envelope.encode("device_lists", user_id=user_id, change=change))

    def send_device_keys(
        self,
        user_id: str,
        device_id: str,
        one_time_keys_count: Mapping[str, int] | None = None,
        unused_fallback_key_types: Iterable[str] | None = None,
    ) -> None:
        """Queue MSC3202 key counts of one device. Raises: BadRecord."""
        fields: dict[str, Any] = {"user_id": user_id, "device_id": device_id}
        if one_time_keys_count is not None:
            fields["one_time_keys_count"] = dict(one_time_keys_count)
        if unused_fallback_key_types is not None:
            fields["unused_fallback_key_types"] = list(unused_fallback_key_types)
        self.send_envelope(envelope.encode("device_keys", **fields))

    def send_envelope(self, raw: bytes) -> None:
        """Queue an already encoded envelope, validated first, under its record's key.

        Raises:
            BadRecord: the envelope is invalid.
        """
        record = envelope.decode(raw)
        self._produce(envelope.record_key(record), raw)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued record is acknowledged.

        Raises:
            KafkaRequestFailed: records were refused or not acknowledged in time (naming the topic).
        """
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise KafkaRequestFailed(f"{self.topic}: {remaining} records not acknowledged within {timeout_s} s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise KafkaRequestFailed(f"{self.topic}: {len(errors)} records refused, first: {errors[0]}")


__all__ = ["BadRecord", "EventProducer"]
