"""What a record diverted to ``<app>.dead-letter`` looks like, and why it was diverted.

A record that cannot be delivered must never stop its partition: the router
and the agents divert it here and go on. The reason is a fixed set, so an
operator can alert and count by it; the free-text detail says what exactly.

Headers of a dead letter (all UTF-8):

* ``reason``: one of ``Reason`` (``malformed``, ``too_large``, ``refused``,
  ``refused_by_appservice``);
* ``detail``: what was wrong, naming the field where one is at fault;
* ``source``: where it was read, ``topic[partition]@offset``;
* ``size``: the original value's length in bytes;
* ``truncated``: ``true`` when the value kept is only the first
  ``MAX_VALUE_BYTES`` of it (a record too large to forward is also too large
  to dead-letter whole).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# A dead letter must itself fit under Kafka's default record limit (1 MB),
# headers included.
MAX_VALUE_BYTES = 512 * 1024


class Reason(StrEnum):
    MALFORMED = "malformed"  # not a valid envelope or internal record
    TOO_LARGE = "too_large"  # over what one record may carry through the pipeline
    REFUSED = "refused"  # the broker refused to take it on, for a reason a retry will not change
    # An appservice refused a transaction of this one item as too large (HTTP 413): the value is the
    # transaction's body, the source ``appservice <id> txn <txn id>``.
    REFUSED_BY_APPSERVICE = "refused_by_appservice"


@dataclass(frozen=True)
class DeadLetter:
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]]


def dead_letter(
    topic: str, partition: int, offset: int, value: bytes | None, reason: Reason, detail: str
) -> DeadLetter:
    """The record to write for ``value``, read at ``topic[partition]@offset``: why, where, and how big."""
    return _letter(f"{topic}[{partition}]@{offset}", value, reason, detail)


def _letter(source: str, value: bytes | None, reason: Reason, detail: str) -> DeadLetter:
    size = 0 if value is None else len(value)
    headers: list[tuple[str, str | bytes | None]] = [
        ("reason", reason.value.encode()),
        ("detail", detail.encode()),
        ("source", source.encode()),
        ("size", str(size).encode()),
    ]
    if value is not None and size > MAX_VALUE_BYTES:
        value = value[:MAX_VALUE_BYTES]
        headers.append(("truncated", b"true"))
    return DeadLetter(value, headers)


def refused_transaction(appservice_id: str, txn_id: int, body: bytes, detail: str) -> DeadLetter:
    """The record to write for a transaction of one item an appservice refused as too large."""
    return _letter(f"appservice {appservice_id} txn {txn_id}", body, Reason.REFUSED_BY_APPSERVICE, detail)
