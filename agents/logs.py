"""One logging configuration for every command, Faust included; client library logs collapsed.

``logging_config(log_format, level)`` is the ``dictConfig`` that ``main``
applies at start-up and that the worker hands to Faust (which replaces the
root logger's handlers when it starts): so the CLI's, the ingest's, Faust's,
aiokafka's and librdkafka's lines all come out one way, on stderr:

* ``text`` (default): ``2026-12-02 05:35:10,684 INFO agents.worker: message``;
* ``json`` (``APPSERVICE_STREAMS_LOG_FORMAT=json``): one JSON object a line,
  ``{"time", "level", "logger", "message"}`` plus ``"exception"`` (the
  traceback's text) when there is one: for log shippers that would otherwise
  split a traceback into one event per line.

Either way the appservices' tokens (``hide``) are replaced by ``<redacted>``
in the message and the exception text: an exception's text is not ours to
control (a client error's repr may carry a request's headers).

Client libraries, with repeats collapsed:

With the broker down for 30 s a worker wrote 3,120 lines: aiokafka (under
Faust) logged "Unable connect to node …" 1,422 times and "Unable to update
metadata" 705 times, and librdkafka wrote 816 ``FAIL`` lines straight to
stderr. Here:

* librdkafka's messages go through the ``librdkafka`` logger (the clients'
  ``logger`` setting, ``KAFKA_LOGGER``), so they take the worker's format;
* ``Repeats`` lets a message through once per ``WINDOW_S`` per logger, level
  and text with its numbers blanked, and says how many like it it held back.

Only client libraries' loggers get the filter: the worker's own lines (a DOWN
appservice, a dead letter) are never held back.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

WINDOW_S = 60.0
# Loggers whose repeats are collapsed: the Kafka clients'. Faust's own loggers stay as they are.
LIBRARIES = ("aiokafka", "librdkafka")

_NUMBERS = re.compile(r"\d+")


class Repeats(logging.Filter):
    """Once per ``window_s`` per (logger, level, text without numbers); the next one counts what was held."""

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()  # librdkafka's messages come from the threads that poll its clients
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # key → (window start, held back)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:
            return True  # a malformed record is the logging module's to report
        key = (record.name, record.levelno, _NUMBERS.sub("#", text))
        now = self._clock()
        with self._lock:
            started, held = self._seen.get(key, (None, 0))
            if started is not None and now - started < self._window_s:
                self._seen[key] = (started, held + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 10_000:  # texts that never repeat: forget the oldest windows
                for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:5_000]:
                    del self._seen[old]
        if held:
            record.msg = f"{text} ({held} more like it in the last {self._window_s:.0f} s)"
            # (), not None: mode's formatter (the worker's) turns None into (None,), and then
            # ``msg % args`` failed: each count became a 40-line "--- Logging error ---" traceback.
            record.args = ()
        return True


KAFKA_LOGGER = logging.getLogger("librdkafka")
# From import on, so every confluent-kafka client's lines are collapsed (the
# produce command's and the ingest's too), not only a worker's.
_REPEATS = Repeats()
KAFKA_LOGGER.addFilter(_REPEATS)


def collapse_library_repeats(repeats: Repeats | None = None) -> Repeats:
    """Put one ``Repeats`` on every logger of ``LIBRARIES`` that exists now (their modules are imported)."""
    repeats = repeats or _REPEATS
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    for logger in [*loggers, KAFKA_LOGGER]:
        if logger.name.split(".")[0] in LIBRARIES and repeats not in logger.filters:
            logger.addFilter(repeats)
    return repeats


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "<redacted>"
_secrets: tuple[str, ...] = ()  # replaced tuple, read by every formatting thread without a lock


def hide(secrets: Iterable[str | None]) -> None:
    """Never write these (tokens) in a log line from now on."""
    global _secrets
    _secrets = tuple(sorted({*_secrets, *(s for s in secrets if s)}, key=len, reverse=True))


def _scrub(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class TextLines(logging.Formatter):
    """The human-readable line (``TEXT_FORMAT``), tokens hidden."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        return _scrub(super().format(record))


class JsonLines(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601, ms), level, logger, message, exception text; tokens hidden."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _scrub(record.getMessage()),
        }
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            doc["exception"] = _scrub(record.exc_text)
        if record.stack_info:
            doc["stack"] = _scrub(self.formatStack(record.stack_info))
        return orjson.dumps(doc).decode()


def logging_config(log_format: str, level: str | int = "INFO") -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of every command: one handler on stderr, ``log_format`` (text, json)."""
    formatter = JsonLines if log_format == "json" else TextLines
    level = level.upper() if isinstance(level, str) else level
    return {
        "version": 1,
        "disable_existing_loggers": False,  # the modules' loggers exist already
        "formatters": {"default": {"()": formatter}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
        },
        "root": {"level": level, "handlers": ["default"]},
    }


__all__ = [
    "KAFKA_LOGGER",
    "REDACTED",
    "TEXT_FORMAT",
    "WINDOW_S",
    "JsonLines",
    "Repeats",
    "TextLines",
    "collapse_library_repeats",
    "hide",
    "logging_config",
]
