"""Logs: one configuration (text or JSON lines) with tokens hidden; client library repeats collapsed."""

from __future__ import annotations

import logging
import logging.config
import os
import subprocess
import sys
from collections.abc import Iterator

import orjson
import pytest

from agents.logs import (
    KAFKA_LOGGER,
    REDACTED,
    JsonLines,
    Repeats,
    TextLines,
    collapse_library_repeats,
    hide,
    logging_config,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(text: str, *args: object, name: str = "aiokafka.conn", level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, text, args, None)


def test_a_message_repeated_with_other_numbers_passes_once_per_window_then_counts_what_was_held() -> None:
    clock = Clock()
    repeats = Repeats(window_s=60, clock=clock)
    assert repeats.filter(record("Unable connect to node with id %d: port %d", 1, 9292))
    for second in range(1, 30):
        clock.now = second
        assert not repeats.filter(record("Unable connect to node with id %d: port %d", 1, 9292 + second))
    clock.now = 61
    later = record("Unable connect to node with id %d: port %d", 1, 9292)
    assert repeats.filter(later)
    assert later.getMessage() == "Unable connect to node with id 1: port 9292 (29 more like it in the last 60 s)"
    clock.now = 200
    quiet = record("Unable connect to node with id %d: port %d", 1, 9292)
    assert repeats.filter(quiet)
    assert quiet.getMessage() == "Unable connect to node with id 1: port 9292"  # nothing held back since


def test_the_count_of_held_back_repeats_goes_through_the_workers_formatter() -> None:
    """Seen in a chaos run: mode's formatter made ``args=None`` into ``(None,)``, and the line a traceback."""
    from mode.utils.logging import ExtensionFormatter

    clock = Clock()
    repeats = Repeats(window_s=60, clock=clock)
    text = "Unable connect to node with id %s: %s"
    refused = "[Errno 111] Connect call failed ('127.0.0.1', 9700): 100% refused"
    assert repeats.filter(record(text, 1, refused))
    clock.now = 1
    assert not repeats.filter(record(text, 1, refused))
    clock.now = 61
    later = record(text, 1, refused)
    assert repeats.filter(later)
    line = ExtensionFormatter(fmt="%(message)s").format(later)
    assert line == f"Unable connect to node with id 1: {refused} (1 more like it in the last 60 s)"


def test_different_texts_levels_and_loggers_are_not_repeats() -> None:
    repeats = Repeats(clock=Clock())
    assert repeats.filter(record("Unable to update metadata"))
    assert repeats.filter(record("Failed fetch messages"))
    assert repeats.filter(record("Unable to update metadata", level=logging.WARNING))
    assert repeats.filter(record("Unable to update metadata", name="aiokafka.cluster"))
    assert not repeats.filter(record("Unable to update metadata"))


@pytest.fixture
def fresh_filters() -> Iterator[list[logging.Logger]]:
    import aiokafka.conn  # noqa: F401 - its logger exists

    loggers = [logging.getLogger("aiokafka.conn"), KAFKA_LOGGER, logging.getLogger("agents.deliverer")]
    saved = [list(logger.filters) for logger in loggers]
    yield loggers
    for logger, filters in zip(loggers, saved, strict=True):
        logger.filters = filters


def test_only_the_kafka_clients_loggers_get_the_filter(fresh_filters: list[logging.Logger]) -> None:
    conn, kafka, deliverer = fresh_filters
    repeats = collapse_library_repeats()
    assert repeats in conn.filters and repeats in kafka.filters
    assert repeats not in deliverer.filters  # "appservice … is DOWN" is never held back
    collapse_library_repeats(repeats)
    assert conn.filters.count(repeats) == 1


def failing_record(text: str, *args: object) -> logging.LogRecord:
    try:
        raise RuntimeError("refused with Authorization: Bearer tok-hs-1234")
    except RuntimeError:
        return logging.LogRecord("agents.worker", logging.ERROR, __file__, 1, text, args, sys.exc_info())


def test_a_json_line_has_time_level_logger_message_and_the_exception_text_on_one_line() -> None:
    line = JsonLines().format(failing_record("appservice %s is DOWN", "bridge"))
    assert "\n" not in line
    doc = orjson.loads(line)
    assert (doc["level"], doc["logger"], doc["message"]) == ("ERROR", "agents.worker", "appservice bridge is DOWN")
    assert doc["time"].endswith("+00:00") and "T" in doc["time"]
    assert doc["exception"].startswith("Traceback") and "RuntimeError: refused" in doc["exception"]


def test_a_json_line_without_an_exception_has_no_exception_key() -> None:
    doc = orjson.loads(JsonLines().format(record("worker ready", name="agents.worker", level=logging.INFO)))
    assert set(doc) == {"time", "level", "logger", "message"}


@pytest.mark.parametrize("formatter", [JsonLines(), TextLines()], ids=["json", "text"])
def test_tokens_never_appear_in_a_line_nor_in_its_exception_text(
    formatter: logging.Formatter,
) -> None:
    hide(["tok-hs-1234", "tok-as-5678", None])
    line = formatter.format(failing_record("sending with %s", "tok-as-5678"))
    assert "tok-hs-1234" not in line and "tok-as-5678" not in line
    assert line.count(REDACTED) >= 2  # the message, the exception (and the source line the traceback quotes)


def test_the_json_configuration_makes_every_logger_write_json_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logging.config.dictConfig(logging_config("json", "info"))
        logging.getLogger("faust.worker").info("starting")
        logging.getLogger("librdkafka").debug("not at info")
    finally:
        root.handlers[:], root.level = saved
    [line] = capsys.readouterr().err.splitlines()
    assert orjson.loads(line)["logger"] == "faust.worker"


def test_an_unknown_log_format_stops_a_command_at_start_up_with_one_line_naming_the_setting() -> None:
    env = {**os.environ, "APPSERVICE_STREAMS_LOG_FORMAT": "xml"}
    done = subprocess.run(
        [sys.executable, "-m", "agents.cli", "status", "--worker", "127.0.0.1:1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "appservice-streams: environment variable APPSERVICE_STREAMS_LOG_FORMAT='xml' must be 'text' or 'json'"
    ]
