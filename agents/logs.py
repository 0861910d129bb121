"""Client library logs through Python logging, with repeats collapsed.

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
from collections.abc import Callable

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


__all__ = ["KAFKA_LOGGER", "WINDOW_S", "Repeats", "collapse_library_repeats"]
