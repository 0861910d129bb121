"""The HTTP adapter against a real loopback appservice: what counts as delivered."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
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
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def test_a_response_body_dribbled_past_the_response_timeout_is_a_timed_out_attempt() -> None:
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
        outcome = await client.put_transaction(registration(url), TxnID(1), b'{"events": []}')
    finally:
        await client.stop()
        await runner.cleanup()
    assert outcome == TimedOut("response")
    assert time.monotonic() - started < 4.0


async def test_a_response_body_over_the_cap_is_not_read_whole_and_fails_the_attempt() -> None:
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
        outcome = await client.put_transaction(registration(url), TxnID(1), b'{"events": []}')
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
