"""The one exception tree of appservice-streams.

``AppserviceStreamsError`` is the root; below it, faults are split by whose
they are. Exceptions of confluent-kafka and rocksdict, ``BufferError`` and
``OSError`` (ports, files) are mapped into this tree once, where they enter
(the seam names the topic, partition, setting or file), so code above a seam
catches only these. aiohttp's client errors become outcomes, never exceptions
(``agents.appservice_http``); aiokafka's stay inside Faust, and anything that
escapes an agent ends the worker (``agents.fatal``). ``agents.cli.exit_code``
maps the tree to exit codes::

    AppserviceStreamsError
    ├── ConfigError               the operator's input is wrong            exit 2
    │   └── RegistrationError       a registration file (names file and field)
    ├── BadRecord                 a record cannot be understood            dead-letter topic
    ├── BadTransaction            a homeserver's transaction, at the ingest  400
    │   └── NotJSON
    ├── InvariantBroken           our own bug                              exit 70 (agents.fatal)
    │   └── GapDetected             (agents.positions) skipped records did not come back
    └── InfrastructureError       what we depend on failed                 exit 1 (70 in a running worker)
        ├── KafkaUnavailable        the cluster did not answer at start-up   exit 69: restart, it may be starting
        ├── KafkaRequestFailed      records refused or unacknowledged, a transaction
        │   │                       not committed, a position not read
        │   └── ChangelogDeliveryError  a table's changelog record: the state is not durable
        ├── BrokerLostData          local state built from topics the broker no longer has   exit 2
        ├── LocalStoreFailed        a local RocksDB store could not be opened
        └── LocalKafkaError         the development broker (``appservice-streams kafka``)

* ``ConfigError``: raised at start-up, before anything is consumed; a restart
  cannot mend it.
* ``BadRecord``: the worker diverts the record to the dead-letter topic with
  this message; it never stalls a partition.
* ``BadTransaction``: the ingest answers 400 and produces nothing of it.
* ``InvariantBroken``: a state the code promises can never be reached was
  reached. It is raised loudly, never swallowed.
* ``InfrastructureError``: Kafka, the disk or the development broker failed;
  a retry or a restart may mend it. Inside a running worker any of them ends
  the process (``agents.fatal``) so the next owner of a partition processes
  it again.
"""

from __future__ import annotations

from pathlib import Path


class AppserviceStreamsError(Exception):
    """Root of every exception this project raises on purpose."""


class ConfigError(AppserviceStreamsError):
    """Operator configuration is invalid; the process must not start."""


class RegistrationError(ConfigError):
    """An appservice registration file is invalid.

    The message always names the file and, where one is at fault, the field.
    """

    def __init__(self, path: Path | str, field: str | None, reason: str) -> None:
        self.path = Path(path)
        self.field = field
        self.reason = reason
        where = f"{self.path}: field '{field}'" if field else f"{self.path}"
        super().__init__(f"invalid appservice registration {where}: {reason}")


class BadRecord(AppserviceStreamsError):
    """A Kafka record could not be decoded or violates the envelope schema."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{reason} (field '{field}')" if field else reason)


class BadTransaction(AppserviceStreamsError):
    """A transaction body a homeserver sent to the ingest has the wrong shape.

    ``field`` is the body's path to the fault, e.g. ``events[3].room_id``.
    """

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{reason} (field '{field}')" if field else reason)


class NotJSON(BadTransaction):
    """A transaction body is not JSON (not UTF-8, or not parseable)."""


class InvariantBroken(AppserviceStreamsError):
    """Our own bug: an impossible state or transition was reached."""


class InfrastructureError(AppserviceStreamsError):
    """Something the worker depends on failed (Kafka, the disk, the development broker); a retry may mend it."""


class KafkaUnavailable(InfrastructureError):
    """The Kafka cluster did not answer (in time) where the settings point; the message names the servers."""


class KafkaRequestFailed(InfrastructureError):
    """Kafka refused records or did not acknowledge them, a transaction was not committed, or a read did not end.

    The message names the topic (and partition, where there is one).
    """


class ChangelogDeliveryError(KafkaRequestFailed):
    """Kafka refused a changelog record: the state it carries is not durable."""


class BrokerLostData(InfrastructureError):
    """The local state was built from topics the broker no longer has (deleted, or made again).

    Starting once with ``--reset-state`` rebuilds it from what the broker has.
    """


class LocalStoreFailed(InfrastructureError):
    """A local RocksDB store could not be opened (the disk, or its lock held by another process); names its folder."""


class LocalKafkaError(InfrastructureError):
    """The development broker could not be fetched, started, signalled or stopped."""
