"""The HTTP adapter: PUT transactions to appservices, turn everything into an Outcome.

This is the only module that imports aiohttp's client, for pings; transaction
PUTs go through ``agents.http1`` (aiohttp's session cost ~200 µs of CPU per PUT:
docs/decisions/http-client.md). Connections are kept per appservice, so a slow
appservice's sockets never starve another's. Tokens go into headers (and, if
the operator opts in, the legacy query parameter) and never into a log line.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path

import aiohttp
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
_READ_CHUNK = 64 * 1024


class _ResponseTooLarge(Exception):
    pass


async def _read_bounded(response: aiohttp.ClientResponse, within_s: float) -> bytes:
    """The response body, read within ``within_s`` in all (not only between reads).

    Raises:
        _ResponseTooLarge: the body is over ``MAX_RESPONSE_BYTES``.
        TimeoutError: it did not arrive whole in time (a body dribbled a byte a
            second kept a txn in flight 60 s past a 3 s response timeout).
    """
    chunks: list[bytes] = []
    size = 0
    async with asyncio.timeout(within_s):
        async for chunk in response.content.iter_chunked(_READ_CHUNK):
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise _ResponseTooLarge
            chunks.append(chunk)
    return b"".join(chunks)


def _headers(registration: Registration) -> dict[str, str]:
    return {"Authorization": f"Bearer {registration.hs_token}", "Content-Type": "application/json"}


def _failure(exc: BaseException) -> Outcome:
    """The outcome for anything aiohttp or the socket raised."""
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return TimedOut("connect" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "response")
    if isinstance(exc, TimeoutError):
        # A total timeout surfaces as a bare TimeoutError, not a ClientError.
        return TimedOut("response")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectFailed(type(exc.os_error).__name__ if exc.os_error else "connect error")
    return ConnectFailed(type(exc).__name__)


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
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout_s, sock_read=response_timeout_s)
        self._response_timeout_s = response_timeout_s
        self._legacy = legacy_authorization
        self._connect_timeout_s = connect_timeout_s
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._origins: dict[str, tuple[http1.Origin, str, str]] = {}

    def _session(self, registration: Registration) -> aiohttp.ClientSession:
        session = self._sessions.get(registration.id)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=4, enable_cleanup_closed=True, ssl=self._tls)
            session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, json_serialize=lambda o: orjson.dumps(o).decode()
            )
            self._sessions[registration.id] = session
        return session

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
        except http1.ResponseTooLarge as exc:
            return HttpError(exc.status, f"response over {MAX_RESPONSE_BYTES} bytes")
        except http1.ConnectTimeout:
            return TimedOut("connect")
        except TimeoutError:
            return TimedOut("response")
        except (OSError, asyncio.IncompleteReadError, http1.BadResponse) as exc:
            return ConnectFailed(type(exc).__name__)
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
        """POST the appservice's ping endpoint; never raises for what the network or appservice does."""
        assert registration.url is not None, "callers refuse url: null first"
        url = registration.url.rstrip("/") + PING_PATH
        body = orjson.dumps({} if transaction_id is None else {"transaction_id": transaction_id})
        try:
            async with self._session(registration).post(
                url, data=body, headers=_headers(registration), allow_redirects=False
            ) as response:
                try:
                    payload = await _read_bounded(response, self._response_timeout_s)
                except _ResponseTooLarge:
                    return HttpError(response.status, body=f"response over {MAX_RESPONSE_BYTES} bytes")
                if 200 <= response.status < 300:
                    return Delivered(response.status)
                return HttpError(response.status, body=payload.decode(errors="replace")[:1000])
        except (aiohttp.ClientError, OSError) as exc:
            return _failure(exc)

    async def stop(self) -> None:
        origins, self._origins = list(self._origins.values()), {}
        for origin, _, _ in origins:
            origin.close()
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
