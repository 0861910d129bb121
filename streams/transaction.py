"""Transaction bodies: the exact bytes of ``PUT /_matrix/app/v1/transactions``.

Items are kept as the JSON bytes they arrived in, so a body is built by
joining them, never by re-serializing: fast, and a retry is byte-identical
because the body is stored once and sent as stored.
"""

from __future__ import annotations

from collections.abc import Sequence

from streams.matrix import EPHEMERAL, EPHEMERAL_MSC2409, EVENTS, TO_DEVICE, TO_DEVICE_MSC2409


def _array(items: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def build_body(
    events: Sequence[bytes],
    ephemeral: Sequence[bytes] = (),
    to_device: Sequence[bytes] = (),
    *,
    ephemeral_stable: bool = False,
    ephemeral_unstable: bool = False,
) -> bytes:
    """The JSON body of one transaction.

    ``events`` is always present (the spec requires it). Ephemeral data goes
    under ``ephemeral`` and/or ``de.sorunome.msc2409.ephemeral`` as the
    registration asks; to-device messages under both their stable (MSC4203)
    and unstable names, because receivers differ in which they read.
    """
    parts = [b'{"' + EVENTS.encode() + b'":' + _array(events)]
    if ephemeral:
        array = _array(ephemeral)
        if ephemeral_stable:
            parts.append(b'"' + EPHEMERAL.encode() + b'":' + array)
        if ephemeral_unstable:
            parts.append(b'"' + EPHEMERAL_MSC2409.encode() + b'":' + array)
    if to_device:
        array = _array(to_device)
        parts.append(b'"' + TO_DEVICE.encode() + b'":' + array)
        parts.append(b'"' + TO_DEVICE_MSC2409.encode() + b'":' + array)
    return b",".join(parts) + b"}"
