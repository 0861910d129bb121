"""Which recorded topics the broker no longer has (the decision behind refusing stale local state)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.state_check import _read, replaced_topics
from streams.errors import ConfigError


def test_same_ids_mean_the_state_matches() -> None:
    assert replaced_topics({"a": "id1", "b": "id2"}, {"a": "id1", "b": "id2", "c": "id3"}) == []


def test_a_new_id_or_a_missing_topic_is_a_replaced_topic() -> None:
    assert replaced_topics({"a": "id1", "b": "id2", "c": "id3"}, {"a": "other", "c": "id3"}) == ["a", "b"]


def test_no_record_yet_replaces_nothing() -> None:
    assert replaced_topics({}, {"a": "id1"}) == []


def test_an_unreadable_record_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    marker = tmp_path / "kafka-topics.json"
    assert _read(marker) == {}
    marker.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"kafka-topics\.json"):
        _read(marker)
    marker.write_text("{broken")
    with pytest.raises(ConfigError, match="cannot read"):
        _read(marker)
