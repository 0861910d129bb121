"""Ending the worker when continuing could lose data."""

from __future__ import annotations

import logging
import os

from streams.errors import InfrastructureError, InvariantBroken

log = logging.getLogger(__name__)

EXIT_CODE = 70  # EX_SOFTWARE


def fatal(exc: BaseException, where: str) -> None:
    """Exit at once, without acking or committing anything.

    An exception that escapes a Faust agent acks the record and restarts the
    agent: for a deliverer that is a silent loss. An unexpected exception (a
    broken invariant, a missing disk) instead ends the process, so the batch
    is processed again by the next worker to own the partition. Whatever the
    exception (ours, ``InfrastructureError`` or not), the exit code is 70.
    """
    if isinstance(exc, InvariantBroken):
        kind = "invariant broken"
    elif isinstance(exc, InfrastructureError):
        kind = "infrastructure failure"  # Kafka refused, or did not answer
    else:
        kind = "unexpected error"
    log.critical("%s in %s, exiting without committing: %r", kind, where, exc, exc_info=exc)
    logging.shutdown()
    os._exit(EXIT_CODE)
