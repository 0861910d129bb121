"""The HTTP adapter: PUT transactions to appservices, turn everything into an Outcome.

Transaction PUTs and pings both go through ``agents.http1`` (aiohttp's client
session cost ~200 µs of CPU per PUT: docs/decisions/http-client.md), so they
share one pool, one bounded read and one mapping of failures to outcomes.
Connections are kept per appservice, so a slow appservice's sockets never
starve another's. Tokens go into headers (and, if the operator opts in, the
legacy query parameter) and never into a log line.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path

import orjson
import yarl

from agents import http1
from streams.errors import ConfigError
from streams.matrix import PING_PATH, TRANSACTIONS_PATH, TxnID
from streams.outcome import ConnectFailed, Delivered, HttpError, Outcome, TimedOut, retry_after_ms
from streams.registration import Registration

log = logging.getLogger(__name__)

# An appservice answers a transaction with `{}` and an error with a small JSON
# object: more than this is not read (a 200 MB answer had taken a worker to
# 905 MB and slowed every other appservice), and the attempt fails.
MAX_RESPONSE_BYTES = http1.MAX_BODY

# What ``http1.Origin.request`` raises for what the network or the appservice does.
_FAILURES = (
    http1.ResponseTooLarge,
    http1.ConnectTimeout,
    TimeoutError,
    OSError,
    asyncio.IncompleteReadError,
    http1.BadResponse,
)


def _failure(exc: BaseException) -> Outcome:
    """The outcome of a request that raised one of ``_FAILURES``."""
    if isinstance(exc, http1.ResponseTooLarge):
        reason = f"response over {MAX_RESPONSE_BYTES} bytes"
        return HttpError(exc.status, reason, body=reason)  # a ping's error answer quotes the body
    if isinstance(exc, http1.ConnectTimeout):
        return TimedOut("connect")
    if isinstance(exc, TimeoutError):
        return TimedOut("response")
    return ConnectFailed(type(exc).__name__)


def _headers(registration: Registration) -> dict[str, str]:
    return {"Authorization": f"Bearer {registration.hs_token}", "Content-Type": "application/json"}


def appservice_tls(ca_file: Path | None) -> ssl.SSLContext:
    """How appservices' certificates are checked: always verified, against the system's CAs plus ``ca_file``.

    Raises: ConfigError when ``ca_file`` holds no CA certificate.
    """
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"APPSERVICE_STREAMS_APPSERVICE_CA_FILE={ca_file}: no CA certificate in it ({exc})"
            ) from exc
    return context


class AppserviceClient:
    def __init__(
        self,
        *,
        connect_timeout_s: float,
        response_timeout_s: float,
        legacy_authorization: bool = False,
        ca_file: Path | None = None,
    ) -> None:
        """Raises: ConfigError when ``ca_file`` holds no certificate."""
        self._tls = appservice_tls(ca_file)
        self._response_timeout_s = response_timeout_s
        self._legacy = legacy_authorization
        self._connect_timeout_s = connect_timeout_s
        self._origins: dict[str, tuple[http1.Origin, str, str]] = {}

    def _origin(self, registration: Registration) -> tuple[http1.Origin, str, str]:
        """The appservice's connections and request head, and the request target before and after the txn id."""
        found = self._origins.get(registration.id)
        if found is None:
            assert registration.url is not None, "url: null appservices are never routed to"
            origin = http1.Origin(registration.url, _headers(registration), self._tls)
            query = ""
            if self._legacy:
                # Encoded as aiohttp encoded ``params``.
                query = "?" + yarl.URL("/").with_query({"access_token": registration.hs_token}).raw_query_string
            prefix = origin.base_path + TRANSACTIONS_PATH.format(txn_id="")
            found = self._origins[registration.id] = (origin, prefix, query)
        return found

    async def put_transaction(self, registration: Registration, txn_id: TxnID, body: bytes) -> Outcome:
        """PUT one transaction; never raises for anything the network or the appservice does.

        Through ``agents.http1`` rather than aiohttp (docs/decisions/http-client.md).
        """
        origin, prefix, query = self._origin(registration)
        try:
            # A redirect is a failed attempt, never followed: only a 2xx from the
            # transaction endpoint itself means the appservice has the txn
            # (a 302 to a page answering 200 had been counted as delivered).
            response = await origin.request(
                "PUT",
                f"{prefix}{txn_id}{query}",
                body,
                connect_timeout_s=self._connect_timeout_s,
                response_timeout_s=self._response_timeout_s,
            )
        except _FAILURES as exc:
            return _failure(exc)
        payload = response.body
        if 200 <= response.status < 300:
            try:
                orjson.loads(payload)
            except orjson.JSONDecodeError:
                return HttpError(response.status, "not JSON")
            return Delivered(response.status)
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            doc = None
        errcode = doc.get("errcode") if isinstance(doc, dict) else None
        wait = retry_after_ms(response.headers.get("retry-after"), doc, now_ms=time.time_ns() // 1_000_000)
        return HttpError(response.status, errcode if isinstance(errcode, str) else None, wait)

    async def ping(self, registration: Registration, transaction_id: str | None) -> Outcome:
        """POST the appservice's ping endpoint; never raises for what the network or appservice does.

        On the transactions' connections (``agents.http1``), with their timeouts and bounded read.
        """
        origin, _, _ = self._origin(registration)
        body = orjson.dumps({} if transaction_id is None else {"transaction_id": transaction_id})
        try:
            response = await origin.request(
                "POST",
                origin.base_path + PING_PATH,
                body,
                connect_timeout_s=self._connect_timeout_s,
                response_timeout_s=self._response_timeout_s,
            )
        except _FAILURES as exc:
            return _failure(exc)
        if 200 <= response.status < 300:
            return Delivered(response.status)
        return HttpError(response.status, body=response.body.decode(errors="replace")[:1000])

    async def stop(self) -> None:
        origins, self._origins = list(self._origins.values()), {}
        for origin, _, _ in origins:
            origin.close()
