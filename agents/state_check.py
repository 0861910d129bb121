"""The worker's local state must have been built from the topics the broker has now.

The state folder (``<data_dir>/<app>``: the appservices table and the room
store, both with the changelog offsets they reached, and the last inbox
offset processed per partition) is a copy of what Kafka holds. If the broker
lost its data (a container without a volume, a new cluster under the same
address) or the topics were deleted and made again, those offsets point into
logs that no longer exist: Faust raised ``ConsistencyError`` on every start
(a crash loop), and the position guard would drop new inbox records as
replays of old ones.

So the worker records the Kafka topic ids of the topics its state comes from
(``kafka-topics.json`` in the state folder) and compares them at every start,
after ``agents.topics`` made sure the topics exist. A topic with another id
is one the state was not built from: the worker refuses to start (exit 2,
one line saying what happened and how to reset), or with
``--reset-state`` deletes the local state and rebuilds it from what the
broker has. Events the lost topics held are gone with them either way.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from confluent_kafka import KafkaException, TopicCollection

from agents.kafka_admin import admin_client, failure
from streams.errors import BrokerLostData, ConfigError
from streams.settings import Settings

log = logging.getLogger(__name__)

MARKER = "kafka-topics.json"


def state_topics(settings: Settings) -> list[str]:
    """The topics whose offsets the local state holds."""
    return [settings.appservices_changelog_topic, settings.rooms_topic, settings.inbox_topic]


def replaced_topics(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """Topics recorded with an id the broker no longer has for them (a topic now missing counts)."""
    return sorted(name for name, topic_id in recorded.items() if current.get(name) != topic_id)


def topic_ids(settings: Settings, names: list[str], timeout_s: float = 30.0) -> dict[str, str]:
    """Kafka's id of each topic in ``names`` that exists.

    Raises:
        KafkaUnavailable: the broker cannot be asked (naming the topic and servers).
        ConfigError: the broker refused our credentials or TLS handshake (``agents.kafka_admin.failure``).
    """
    bootstrap = settings.bootstrap_servers
    admin = admin_client(bootstrap, settings.kafka_security)
    ids: dict[str, str] = {}
    for name, future in admin.describe_topics(TopicCollection(names)).items():
        try:
            ids[name] = str(future.result(timeout_s).topic_id)
        except KafkaException as exc:
            if "UNKNOWN_TOPIC" not in str(exc):
                raise failure(admin, bootstrap, exc, f"describe topic {name} on {bootstrap}") from exc
    return ids


def check_local_state(settings: Settings, reset: bool = False) -> None:
    """Refuse (or with ``reset``, delete) local state built from topics the broker no longer has; record the ids.

    Raises:
        BrokerLostData: the state does not match the broker and ``reset`` is false.
        KafkaUnavailable: as ``topic_ids``.
        ConfigError: the record of topic ids in the state folder cannot be read.
    """
    marker = settings.state_dir / MARKER
    current = topic_ids(settings, state_topics(settings))
    recorded = _read(marker)
    replaced = replaced_topics(recorded, current) if recorded else []
    if reset and settings.state_dir.exists():
        shutil.rmtree(settings.state_dir)
        log.warning("local state %s deleted (--reset-state): rebuilding it from the broker", settings.state_dir)
    elif replaced:
        raise BrokerLostData(
            f"the local state in {settings.state_dir} was built from topics the broker no longer has"
            f" ({', '.join(replaced)} were deleted or made again: the broker lost its data?); start once with"
            " --reset-state to delete it and rebuild from what the broker has (events only the old topics held are"
            " lost)"
        )
    _write(marker, current)


def _read(marker: Path) -> dict[str, str]:
    try:
        data = json.loads(marker.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {marker}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{marker} is not a JSON object of topic ids")
    return {str(k): str(v) for k, v in data.items()}


def _write(marker: Path, ids: Mapping[str, str]) -> None:
    marker.parent.mkdir(parents=True, exist_ok=True)
    partial = marker.with_suffix(".tmp")
    partial.write_text(json.dumps(dict(ids), indent=1, sort_keys=True) + "\n")
    os.replace(partial, marker)
