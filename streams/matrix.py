"""Matrix vocabulary, in one place: identifier types and transaction body keys.

Names follow the Matrix spec (client-server and application-service APIs).
Where an MSC defines an unstable name beside a stable one, both are constants
here, so the rest of the code never spells a body key by hand.
"""

from __future__ import annotations

from typing import NewType

UserID = NewType("UserID", str)
RoomID = NewType("RoomID", str)
EventID = NewType("EventID", str)
RoomAlias = NewType("RoomAlias", str)
AppserviceID = NewType("AppserviceID", str)
TxnID = NewType("TxnID", int)

# PUT /_matrix/app/v1/transactions/{txnId} body keys.
EVENTS = "events"
EPHEMERAL = "ephemeral"
EPHEMERAL_MSC2409 = "de.sorunome.msc2409.ephemeral"
TO_DEVICE = "to_device"
TO_DEVICE_MSC2409 = "de.sorunome.msc2409.to_device"
DEVICE_LISTS_MSC3202 = "org.matrix.msc3202.device_lists"
OTK_COUNT_MSC3202 = "org.matrix.msc3202.device_one_time_keys_count"
# Synapse also sends this misspelt name; some receivers read only it.
OTK_COUNT_MSC3202_SYNAPSE = "org.matrix.msc3202.device_one_time_key_counts"
FALLBACK_KEYS_MSC3202 = "org.matrix.msc3202.device_unused_fallback_key_types"

# Registration keys that are not plain identifiers.
REG_PUSH_EPHEMERAL_MSC2409 = "de.sorunome.msc2409.push_ephemeral"
REG_MSC3202 = "org.matrix.msc3202"

MEMBER_EVENT = "m.room.member"

TRANSACTIONS_PATH = "/_matrix/app/v1/transactions/{txn_id}"
PING_PATH = "/_matrix/app/v1/ping"


def is_local(user_id: str, server_name: str) -> bool:
    """Whether ``user_id`` belongs to the homeserver called ``server_name``."""
    return user_id.endswith(":" + server_name)
