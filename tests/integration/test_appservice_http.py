"""The HTTP adapter against a real loopback appservice: what counts as delivered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from agents.appservice_http import AppserviceClient
from streams.matrix import TxnID
from streams.outcome import Delivered, HttpError
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
