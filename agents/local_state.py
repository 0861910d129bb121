"""Whether the worker's local table state can be trusted at start-up.

Faust writes a table change to the local RocksDB store at once and its
changelog record later; ``agents.table_store`` acknowledges a step only when
Kafka has the records. A worker that dies in between (SIGKILL, OOM, a changelog
write refused and ``fatal``) leaves local state ahead of Kafka: a warm restart
then acted on it (a transaction Kafka never acknowledged was sent: seen when a
6 MB transaction's changelog write was refused), against the commit order, and
a later owner of the partition, restoring from the changelog, would not know it.

So local table state is trusted only after a clean stop: the worker writes
``CLEAN_STOP`` once its changelog producer acknowledged everything at shutdown,
and removes it when it starts. A start that finds the table folder without the
mark deletes it, and Faust restores every table from its changelog (the cold
path; docs/decisions/trust-local-tables-after-clean-stop.md). The router's room
store is not concerned: it is written only after Kafka acknowledged the
changelog records it depends on.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

CLEAN_STOP = "CLEAN_STOP"


def open_tables(state_dir: Path, tabledir: Path) -> bool:
    """Keep ``tabledir`` if the last run stopped cleanly, else delete it; either way the run is now unclean.

    Returns whether the local tables were kept.
    """
    mark = state_dir / CLEAN_STOP
    clean = mark.exists()
    mark.unlink(missing_ok=True)
    if clean or not tabledir.exists():
        return True
    log.warning(
        "the last run of this worker did not stop cleanly: its local tables (%s) may hold changes Kafka never "
        "acknowledged; deleted, restoring them from their changelogs",
        tabledir,
    )
    shutil.rmtree(tabledir)
    return False


def stopped_cleanly(state_dir: Path) -> None:
    """Mark the local tables trustworthy: every change in them is in Kafka."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / CLEAN_STOP).touch()
