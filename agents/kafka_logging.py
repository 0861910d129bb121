"""librdkafka's log lines through Python logging, each distinct line at most once a minute.

Every confluent-kafka client (router, changelog producer, admin, side
consumers, ``EventProducer``) passes ``"logger": LOGGER`` in its
configuration, so the client library logs in the worker's one format
instead of writing ``%3|…|FAIL|…`` lines to stderr. A broker that is down
made a worker print 578 such lines in 30 s before its one useful line;
repeats of a line (numbers aside) are now dropped for ``WINDOW_S`` and
counted in the next one that passes.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

WINDOW_S = 60.0
_MAX_REMEMBERED = 1000
_NUMBERS = re.compile(r"\d+")


class RepeatFilter(logging.Filter):
    """Passes a message, then drops messages like it (same text but numbers) for ``window_s``."""

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._passed_at: dict[str, float] = {}
        self._dropped: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        shape = _NUMBERS.sub("#", record.getMessage())
        now = self._clock()
        passed_at = self._passed_at.get(shape)
        if passed_at is not None and now - passed_at < self._window_s:
            self._dropped[shape] = self._dropped.get(shape, 0) + 1
            return False
        if len(self._passed_at) >= _MAX_REMEMBERED:
            self._passed_at.clear()
        self._passed_at[shape] = now
        dropped = self._dropped.pop(shape, 0)
        if dropped:
            record.msg = f"{record.getMessage()} (and {dropped} more like it in the last {self._window_s:.0f} s)"
            record.args = ()
        return True


LOGGER = logging.getLogger("appservice_streams.librdkafka")
LOGGER.addFilter(RepeatFilter())
