"""The HTTP adapter against a real loopback appservice: what counts as delivered."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from agents.appservice_http import MAX_RESPONSE_BYTES, AppserviceClient
from streams.matrix import TxnID
from streams.outcome import ConnectFailed, Delivered, HttpError, TimedOut
from streams.registration import Registration, parse_registration


def registration(url: str) -> Registration:
    return parse_registration(
        {
            "id": "bridge",
            "url": url,
            "as_token": "a",
            "hs_token": "h",
            "sender_localpart": "bot",
            "namespaces": {"users": [], "rooms": [], "aliases": []},
        },
        Path("bridge.yaml"),
    )


class Redirecting:
    """Answers the transaction and ping endpoints with a redirect to a path that answers 200."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.reached_target: list[str] = []

    async def redirect(self, request: web.Request) -> web.Response:
        return web.Response(status=self.status, headers={"Location": "/elsewhere"})

    async def target(self, request: web.Request) -> web.Response:
        self.reached_target.append(request.method)
        return web.json_response({})


@pytest.fixture
async def redirecting(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Redirecting, str]]:
    server = Redirecting(request.param)
    app = web.Application()
    app.router.add_put("/_matrix/app/v1/transactions/{txn_id}", server.redirect)
    app.router.add_post("/_matrix/app/v1/ping", server.redirect)
    app.router.add_route("*", "/elsewhere", server.target)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield server, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.mark.parametrize("redirecting", [301, 302, 307, 308], indirect=True)
async def test_a_redirected_transaction_is_a_failed_attempt_and_is_not_followed(
    redirecting: tuple[Redirecting, str],
) -> None:
    server, url = redirecting
    client = AppserviceClient(connect_timeout_s=5, response_timeout_s=5)
    try:
        outcome = await client.put_transaction(registration(url), TxnID(1), b'{"events": []}')
    finally:
        await client.stop()
    assert outcome == HttpError(server.status)
    assert server.reached_target == []


@pytest.mark.parametrize("redirecting", [302], indirect=True)
async def test_a_redirected_ping_is_a_failed_ping(redirecting: tuple[Redirecting, str]) -> None:
    server, url = redirecting
    client = AppserviceClient(connect_timeout_s=5, response_timeout_s=5)
    try:
        outcome = await client.ping(registration(url), "t1")
    finally:
        await client.stop()
    assert isinstance(outcome, HttpError) and outcome.status == 302
    assert not isinstance(outcome, Delivered)
    assert server.reached_target == []


async def serve(handler: object) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_put("/_matrix/app/v1/transactions/{txn_id}", handler)  # type: ignore[arg-type]
    app.router.add_post("/_matrix/app/v1/ping", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


# Transactions and pings share one HTTP client (agents.http1): both are checked where answers misbehave.
Call = Callable[[AppserviceClient, str], Awaitable[object]]
SEND_TXN: Call = lambda client, url: client.put_transaction(registration(url), TxnID(1), b'{"events": []}')  # noqa: E731
PING: Call = lambda client, url: client.ping(registration(url), "t1")  # noqa: E731
EITHER_REQUEST = pytest.mark.parametrize("call", [SEND_TXN, PING], ids=["transaction", "ping"])


@EITHER_REQUEST
async def test_a_response_body_dribbled_past_the_response_timeout_is_a_timed_out_attempt(call: Call) -> None:
    async def dribble(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for _ in range(20):  # a byte every 0.3 s: each gap is under the timeout, the whole is not
            await response.write(b" ")
            await asyncio.sleep(0.3)
        await response.write(b"{}")
        return response

    runner, url = await serve(dribble)
    client = AppserviceClient(connect_timeout_s=5, response_timeout_s=1.5)
    started = time.monotonic()
    try:
        outcome = await call(client, url)
    finally:
        await client.stop()
        await runner.cleanup()
    assert outcome == TimedOut("response")
    assert time.monotonic() - started < 4.0


@EITHER_REQUEST
async def test_a_response_body_over_the_cap_is_not_read_whole_and_fails_the_attempt(call: Call) -> None:
    sent = 0

    async def flood(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b" " * (1024 * 1024)
        try:
            for _ in range(50):  # 50 MB of whitespace, then a valid {}
                await response.write(chunk)
                sent += len(chunk)
            await response.write(b"{}")
        except (ConnectionResetError, RuntimeError):
            pass  # the client hung up, as it should
        return response

    runner, url = await serve(flood)
    client = AppserviceClient(connect_timeout_s=5, response_timeout_s=10)
    try:
        outcome = await call(client, url)
    finally:
        await client.stop()
        await runner.cleanup()
    assert isinstance(outcome, HttpError) and outcome.status == 200
    assert outcome.errcode == f"response over {MAX_RESPONSE_BYTES} bytes"
    assert sent < 50 * 1024 * 1024, "the client stopped reading long before the end"


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no CA signed, and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def serve_tls(cert: Path, key: Path) -> tuple[web.AppRunner, str]:
    async def accept(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_put("/_matrix/app/v1/transactions/{txn_id}", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"https://127.0.0.1:{port}"


@pytest.mark.parametrize("trusted", [False, True], ids=["refused-by-default", "trusted-with-its-ca"])
async def test_an_appservice_with_a_self_signed_certificate_is_refused_unless_its_ca_is_added(
    self_signed: tuple[Path, Path], trusted: bool
) -> None:
    cert, key = self_signed
    runner, url = await serve_tls(cert, key)
    client = AppserviceClient(connect_timeout_s=5, response_timeout_s=5, ca_file=cert if trusted else None)
    try:
        outcome = await client.put_transaction(registration(url), TxnID(1), b'{"events": []}')
    finally:
        await client.stop()
        await runner.cleanup()
    if trusted:
        assert outcome == Delivered(200)
    else:
        assert isinstance(outcome, ConnectFailed), outcome


# What agents.http1 reads the way aiohttp read it, from a raw loopback server.


async def serve_raw(answers: list[bytes | None]) -> tuple[asyncio.Server, str, list[bytes]]:
    """Answer each request with the next of ``answers``; None: close the connection instead, unanswered."""
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                requests.append(head + await reader.readexactly(length))
                answer = answers.pop(0)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/base/", requests


async def put_all(url: str, count: int, *, legacy: bool = False) -> list[object]:
    client = AppserviceClient(connect_timeout_s=5, response_timeout_s=5, legacy_authorization=legacy)
    try:
        outcomes = []
        for n in range(count):
            outcomes.append(await client.put_transaction(registration(url), TxnID(n + 1), b"{}"))
            await asyncio.sleep(0.05)  # lets a server's close reach the idle connection
        return outcomes
    finally:
        await client.stop()


async def test_chunked_gzip_informational_and_read_to_close_answers_are_read_whole() -> None:
    import gzip

    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n1;x=y\r\n}\r\n0\r\nT: 1\r\n\r\n"
    zipped = gzip.compress(b'{"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 3000}')
    gzipped = b"HTTP/1.1 429 X\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(zipped), zipped)
    informational = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    to_close = b"HTTP/1.0 200 OK\r\n\r\n{}"
    server, url, requests = await serve_raw([chunked, gzipped, informational, to_close])
    try:
        outcomes = await put_all(url, 4)
    finally:
        server.close()
    assert outcomes[0] == Delivered(200)
    assert isinstance(outcomes[1], HttpError) and outcomes[1].errcode == "M_LIMIT_EXCEEDED"
    assert outcomes[1].retry_after_ms == 3000
    assert outcomes[2] == HttpError(204, "not JSON")  # as before: a 2xx needs a JSON body
    assert outcomes[3] == Delivered(200)
    assert requests[0].startswith(b"PUT /base/_matrix/app/v1/transactions/1 HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer h\r\n" in requests[0]


async def test_a_keep_alive_connection_the_appservice_closed_is_replaced_and_the_legacy_token_is_a_query() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    # 1 answered; 2 on the kept connection, which is closed unanswered (as an idle timeout racing the
    # request): sent again once on a new connection, as aiohttp did for a PUT; 3 on that connection.
    server, url, requests = await serve_raw([ok, None, ok, ok])
    try:
        outcomes = await put_all(url, 3, legacy=True)
    finally:
        server.close()
    assert outcomes == [Delivered(200)] * 3
    assert [r.split(b" ")[1] for r in requests] == [
        b"/base/_matrix/app/v1/transactions/%d?access_token=h" % n for n in (1, 2, 2, 3)
    ]


async def test_garbage_instead_of_http_and_a_close_before_the_answer_are_failed_attempts() -> None:
    server, url, _ = await serve_raw([b"SSH-2.0-OpenSSH\r\n\r\n"])
    try:
        outcomes = await put_all(url, 1)
    finally:
        server.close()
    assert outcomes == [ConnectFailed("BadResponse")]
    server, url, _ = await serve_raw([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}"])
    try:
        outcomes = await put_all(url, 1)
    finally:
        server.close()
    assert outcomes == [ConnectFailed("IncompleteReadError")]
