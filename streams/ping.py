"""``POST /_matrix/client/v1/appservice/{appserviceId}/ping``, the pure part.

An appservice (mautrix does it at start-up) asks the homeserver to ping it
back; the homeserver calls ``POST {url}/_matrix/app/v1/ping`` and reports how
that went. This module decides who may ask (``authorize``) and what to
answer (``answer``), exactly as the client-server spec lists; the HTTP shell
(``agents.http_api``) does the calls. A successful ping also retries the
appservice's pending transaction at once (``PingSucceeded`` to its machine).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams.matrix import AppserviceID
from streams.outcome import ConnectFailed, Delivered, HttpError, Outcome, TimedOut
from streams.registration import Registration


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]


def _error(http_status: int, errcode: str, error: str, **extra: Any) -> Answer:
    return Answer(http_status, {"errcode": errcode, "error": error, **extra})


def authorize(
    registrations: Mapping[AppserviceID, Registration], appservice_id: str, access_token: str | None
) -> Registration | Answer:
    """The registration being pinged, or the error to answer with.

    The token must be the ``as_token`` of the appservice named in the path.
    """
    if not access_token:
        return _error(401, "M_MISSING_TOKEN", "Missing access token")
    registration = registrations.get(AppserviceID(appservice_id))
    # Compared in constant time, as bytes (compare_digest refuses non-ASCII str).
    if registration is None or not hmac.compare_digest(registration.as_token.encode(), access_token.encode()):
        return _error(403, "M_FORBIDDEN", "Access token does not belong to this appservice")
    if registration.url is None:
        return _error(400, "M_URL_NOT_SET", "The appservice has no URL to ping")
    return registration


def answer(outcome: Outcome, duration_ms: int) -> Answer:
    """The spec's answer for how the appservice's ping endpoint responded."""
    if isinstance(outcome, Delivered):
        return Answer(200, {"duration_ms": duration_ms})
    if isinstance(outcome, HttpError):
        return _error(
            502,
            "M_BAD_STATUS",
            "The appservice answered the ping with an error",
            status=outcome.status,
            body=outcome.body,
        )
    if isinstance(outcome, TimedOut):
        return _error(504, "M_CONNECTION_TIMEOUT", "The appservice did not answer the ping in time")
    if isinstance(outcome, ConnectFailed):
        return _error(502, "M_CONNECTION_FAILED", "Could not connect to the appservice")
    raise TypeError(f"not an outcome: {outcome!r}")
