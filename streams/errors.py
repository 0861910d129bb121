"""The one exception tree of appservice-streams.

``AppserviceStreamsError`` is the root. Below it, faults are split by whose
fault they are:

* ``ConfigError`` — the operator's input is wrong (a registration file, a
  setting). Raised at start-up, before anything is consumed.
* ``BadRecord`` — a record on a topic cannot be understood. The worker diverts
  it to the dead-letter topic with this message; it never stalls a partition.
* ``BadTransaction`` — a homeserver's appservice transaction (at the ingest)
  cannot be understood; ``NotJSON`` when it is not JSON at all. The ingest
  answers 400 and produces nothing of it.
* ``InvariantBroken`` — our own bug: a state the code promises can never be
  reached was reached. It is raised loudly, never swallowed.
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
