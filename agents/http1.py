"""A small HTTP/1.1 client for transaction PUTs: keep-alive connections on asyncio streams.

aiohttp's ``ClientSession`` runs ~400 Python calls per PUT (cookie jar, tracing,
header multidicts, URL objects, a payload writer task); a transaction PUT needs
a fixed request head, one write and one bounded read. ``Origin`` keeps one
appservice's request head prebuilt and its idle connections (docs/decisions/http-client.md).

What it keeps of aiohttp's behaviour, as ``agents.appservice_http`` relies on:
TLS verified against the given context (SNI and the name checked), redirects
never followed (a 3xx is an answer like any other), informational (1xx but
101) answers skipped, bodies by Content-Length, chunked or until close, gzip
and deflate bodies decoded, a stale keep-alive connection (closed by the
appservice while idle) retried once on a new one, as aiohttp does for PUT.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from dataclasses import dataclass

import yarl

MAX_BODY = 1024 * 1024  # agents.appservice_http.MAX_RESPONSE_BYTES
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_IDLE = 4  # idle connections kept per appservice (aiohttp's pool held at most 4)
_CRLF = b"\r\n"
_HEAD_END = b"\r\n\r\n"


class ConnectTimeout(Exception):
    """No connection (TCP and TLS) within the connect timeout."""


class BadResponse(Exception):
    """The answer is not an HTTP/1.x response this client can read."""


class ResponseTooLarge(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case; the first value of a repeated header
    body: bytes


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Origin:
    """One appservice's endpoint: where to connect, the fixed part of the request head, the idle connections.

    Raises: ValueError for a URL that is not http or https.
    """

    def __init__(self, base_url: str, headers: dict[str, str], tls: ssl.SSLContext) -> None:
        url = yarl.URL(base_url.rstrip("/"))
        if url.scheme not in _DEFAULT_PORTS or not url.raw_host:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = url.raw_host
        self._port = url.port or _DEFAULT_PORTS[url.scheme]
        self._tls = tls if url.scheme == "https" else None
        self.base_path = url.raw_path.rstrip("/")
        host = f"[{self._host}]" if ":" in self._host else self._host
        if self._port != _DEFAULT_PORTS[url.scheme]:
            host = f"{host}:{self._port}"
        fixed = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._fixed_headers = f"Host: {host}\r\n{fixed}User-Agent: appservice-streams\r\n".encode()
        self._idle: list[_Connection] = []

    async def request(
        self, method: str, target: str, body: bytes, *, connect_timeout_s: float, response_timeout_s: float
    ) -> Response:
        """Send one request on an idle connection or a new one; read the answer within the response timeout.

        The timeout applies to sending the body and reading the head, and again
        to reading the body, in all (not only between reads).

        Raises:
            ConnectTimeout: no connection within ``connect_timeout_s``.
            TimeoutError: no answer, or not all of it, within ``response_timeout_s``.
            ResponseTooLarge: the body is over ``MAX_BODY`` bytes.
            BadResponse: not HTTP/1.x.
            OSError, asyncio.IncompleteReadError: refused, reset, closed early, TLS refused.
        """
        head = b"".join(
            (f"{method} {target} HTTP/1.1\r\n".encode(), self._fixed_headers, b"Content-Length: %d\r\n\r\n" % len(body))
        )
        connection = self._take_idle()
        while True:
            reused = connection is not None
            if connection is None:
                connection = await self._connect(connect_timeout_s)
            try:
                response, keep = await _exchange(connection, head, body, response_timeout_s, reused)
            except _Stale:
                connection[1].close()
                connection = None
                continue
            except BaseException:
                connection[1].close()
                raise
            if keep and len(self._idle) < _MAX_IDLE:
                self._idle.append(connection)
            else:
                connection[1].close()
            return response

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            reader, writer = connection
            if not reader.at_eof() and not writer.is_closing():
                return connection
            writer.close()  # the appservice closed it while idle
        return None

    async def _connect(self, timeout_s: float) -> _Connection:
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.open_connection(
                    self._host, self._port, ssl=self._tls, server_hostname=self._host if self._tls else None
                )
        except TimeoutError as exc:
            raise ConnectTimeout from exc

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()


class _Stale(Exception):
    """A reused connection was closed before any answer: send again on a new one."""


async def _exchange(
    connection: _Connection, head: bytes, body: bytes, timeout_s: float, reused: bool
) -> tuple[Response, bool]:
    reader, writer = connection
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s) as deadline:
        try:
            if len(body) < 65536:
                writer.write(head + body)
            else:
                writer.write(head)
                writer.write(body)
            await writer.drain()
            while True:
                raw = await reader.readuntil(_HEAD_END)
                status, headers = _parse_head(raw)
                if not (100 <= status < 200) or status == 101:
                    break
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if reused and not (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise _Stale from exc
            raise
        except asyncio.LimitOverrunError as exc:
            raise BadResponse("response head too long") from exc
        deadline.reschedule(loop.time() + timeout_s)
        keep = raw.startswith(b"HTTP/1.1") and headers.get("connection", "").lower() != "close"
        if status < 200 or status in (204, 304):
            payload = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            payload = await _read_chunked(reader, status)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError as exc:
                raise BadResponse("bad Content-Length") from exc
            if length > MAX_BODY:
                raise ResponseTooLarge(status)
            payload = await reader.readexactly(length)
        else:
            payload = await _read_to_end(reader, status)
            keep = False
    encoding = headers.get("content-encoding", "").lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        payload = _decompressed(payload, status, gzip=encoding != "deflate")
    return Response(status, headers, payload), keep and status != 101


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise BadResponse(f"bad status line {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise BadResponse(f"bad header line {line[:100]!r}")
        headers.setdefault(name.strip().lower(), value.strip())
    return int(parts[1]), headers


async def _read_chunked(reader: asyncio.StreamReader, status: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            line = await reader.readuntil(_CRLF)
            try:
                length = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise BadResponse("bad chunk size") from exc
            if length == 0:
                while await reader.readuntil(_CRLF) != _CRLF:
                    pass  # trailers
                return b"".join(chunks)
            size += length
            if size > MAX_BODY:
                raise ResponseTooLarge(status)
            chunk = await reader.readexactly(length + 2)
            chunks.append(chunk[:-2])
    except asyncio.LimitOverrunError as exc:
        raise BadResponse("chunk line too long") from exc


async def _read_to_end(reader: asyncio.StreamReader, status: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await reader.read(65536):
        size += len(chunk)
        if size > MAX_BODY:
            raise ResponseTooLarge(status)
        chunks.append(chunk)
    return b"".join(chunks)


def _decompressed(payload: bytes, status: int, *, gzip: bool) -> bytes:
    decompressor = zlib.decompressobj(wbits=47 if gzip else 15)
    try:
        out = decompressor.decompress(payload, MAX_BODY + 1)
    except zlib.error as exc:
        raise BadResponse("bad compressed body") from exc
    if len(out) > MAX_BODY:
        raise ResponseTooLarge(status)
    return out
