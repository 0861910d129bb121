"""Transaction bodies: the exact bytes of ``PUT /_matrix/app/v1/transactions``.

Items are kept as the JSON bytes they arrived in, so a body is built by
joining them, never by re-serializing: fast, and a retry is byte-identical
because the body is stored once and sent as stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from streams.matrix import (
    DEVICE_LISTS_MSC3202,
    EPHEMERAL,
    EPHEMERAL_MSC2409,
    EVENTS,
    FALLBACK_KEYS_MSC3202,
    OTK_COUNT_MSC3202,
    OTK_COUNT_MSC3202_SYNAPSE,
    TO_DEVICE,
    TO_DEVICE_MSC2409,
)


def _array(items: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def merge_device_data(items: Sequence[bytes]) -> dict[str, Any]:
    """One MSC3202 summary from device items in arrival order.

    A user's later ``left`` wins over an earlier ``changed``, and the reverse;
    the latest key counts of a device win. Only non-empty keys are returned.
    """
    changed: dict[str, None] = {}  # dicts as ordered sets
    left: dict[str, None] = {}
    otk: dict[str, dict[str, Any]] = {}
    fallback: dict[str, dict[str, Any]] = {}
    for raw in items:
        item = orjson.loads(raw)
        user = item["user"]
        change = item.get("lists")
        if change == "changed":
            left.pop(user, None)
            changed[user] = None
        elif change == "left":
            changed.pop(user, None)
            left[user] = None
        else:
            if item.get("otk") is not None:
                otk.setdefault(user, {})[item["device"]] = item["otk"]
            if item.get("fallback") is not None:
                fallback.setdefault(user, {})[item["device"]] = item["fallback"]
    summary: dict[str, Any] = {}
    if changed or left:
        summary[DEVICE_LISTS_MSC3202] = {"changed": list(changed), "left": list(left)}
    if otk:
        summary[OTK_COUNT_MSC3202] = otk
        summary[OTK_COUNT_MSC3202_SYNAPSE] = otk
    if fallback:
        summary[FALLBACK_KEYS_MSC3202] = fallback
    return summary


def build_body(
    events: Sequence[bytes],
    ephemeral: Sequence[bytes] = (),
    to_device: Sequence[bytes] = (),
    device: Sequence[bytes] = (),
    *,
    ephemeral_stable: bool = False,
    ephemeral_unstable: bool = False,
) -> bytes:
    """The JSON body of one transaction.

    ``events`` is always present (the spec requires it). Ephemeral data goes
    under ``ephemeral`` and/or ``de.sorunome.msc2409.ephemeral`` as the
    registration asks; to-device messages under both their stable (MSC4203)
    and unstable names, because receivers differ in which they read; device
    data as one merged MSC3202 summary, each key only when non-empty.
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
    if device:
        for key, value in merge_device_data(device).items():
            parts.append(orjson.dumps(key) + b":" + orjson.dumps(value))
    return b",".join(parts) + b"}"


_DEVICE_KEYS = (DEVICE_LISTS_MSC3202, OTK_COUNT_MSC3202, OTK_COUNT_MSC3202_SYNAPSE, FALLBACK_KEYS_MSC3202)


def slice_body(body: bytes, start: Sequence[int], count: Sequence[int]) -> bytes:
    """A transaction body holding ``count[kind]`` items of ``body`` from ``start[kind]`` on, per kind.

    Kinds in ``streams.machine.ItemKind`` order: events, ephemeral, to-device,
    then the device summary, which goes whole (with its keys as ``body`` has
    them) when ``count`` has any device item. ``body`` was built by
    ``build_body`` from orjson-serialized items, so re-serializing an item
    gives its bytes back: a slice is what ``build_body`` would have made of
    those items, under the same keys.

    Raises: ValueError when ``body`` is not a transaction body.
    """
    doc = orjson.loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get(EVENTS), list):
        raise ValueError("not a transaction body")

    def items(*keys: str, kind: int) -> list[bytes]:
        found: list[Any] = next((doc[k] for k in keys if isinstance(doc.get(k), list)), [])
        return [orjson.dumps(item) for item in found[start[kind] : start[kind] + count[kind]]]

    events = items(EVENTS, kind=0)
    ephemeral = items(EPHEMERAL, EPHEMERAL_MSC2409, kind=1)
    to_device = items(TO_DEVICE, TO_DEVICE_MSC2409, kind=2)
    sliced = build_body(
        events, ephemeral, to_device, ephemeral_stable=EPHEMERAL in doc, ephemeral_unstable=EPHEMERAL_MSC2409 in doc
    )
    if not count[3]:
        return sliced
    device = [orjson.dumps(key) + b":" + orjson.dumps(doc[key]) for key in _DEVICE_KEYS if key in doc]
    return b",".join([sliced[:-1], *device]) + b"}" if device else sliced
