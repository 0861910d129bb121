"""A real HTTP appservice on loopback that records every request and misbehaves on demand."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass(frozen=True)
class Received:
    txn_id: str
    body: bytes
    authorization: str | None
    query: dict[str, str]
    at: float  # time.monotonic() when the request arrived

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(orjson.loads(self.body)["events"])

    @property
    def document(self) -> dict[str, Any]:
        return dict(orjson.loads(self.body))


HANG = -1
RESET = -2


@dataclass(frozen=True)
class Failure:
    status: int  # an HTTP status, HANG or RESET
    headers: dict[str, str] = field(default_factory=dict)


async def _reset_mid_response(request: web.Request) -> web.StreamResponse:
    """Send the status line, headers and the start of a body, then reset the connection (RST, not FIN)."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(b'{"')
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return response


@dataclass
class RecordingAppservice:
    """``PUT /_matrix/app/v1/transactions/{txnId}`` recorder.

    Controls: ``hold()`` keeps responses pending until ``release()``;
    ``fail_next(n, status, headers)`` answers the next n requests with an error;
    ``hang_next(n)`` leaves the next n unanswered until the client gives up;
    ``reset_next(n)`` starts an answer and resets the connection;
    ``hang()`` never answers; ``delay_s`` answers slowly.
    """

    hs_token: str = "hs-secret"
    requests: list[Received] = field(default_factory=list)
    delay_s: float = 0.0
    _failures: list[Failure] = field(default_factory=list)
    _gate: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _hung: bool = False
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None
    _fail_matching: list[tuple[Callable[[Received], bool], int, int]] = field(default_factory=list)
    pings: list[dict[str, Any]] = field(default_factory=list)
    ping_status: int = 200
    ping_hangs: bool = False
    url: str = ""

    def __post_init__(self) -> None:
        self._gate.set()

    async def start(self, port: int = 0) -> str:
        # 100 events at the spec's 64 KiB limit make a 6.4 MB transaction.
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_put("/_matrix/app/v1/transactions/{txn_id}", self._transaction)
        app.router.add_post("/_matrix/app/v1/ping", self._ping)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        self._stopping.set()  # hung handlers return, so the server closes at once
        self._gate.set()
        self._hung = False
        self.ping_hangs = False
        if self._runner is not None:
            await self._runner.cleanup()

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def hang(self) -> None:
        self._hung = True

    def fail_next(self, count: int, status: int = 500, headers: dict[str, str] | None = None) -> None:
        self._failures.extend([Failure(status, headers or {})] * count)

    def hang_next(self, count: int) -> None:
        self._failures.extend([Failure(HANG)] * count)

    def reset_next(self, count: int) -> None:
        self._failures.extend([Failure(RESET)] * count)

    def fail_matching(self, predicate: Callable[[Received], bool], times: int, status: int = 500) -> None:
        """Answer ``status`` to the first ``times`` requests for which ``predicate`` holds."""
        self._fail_matching.append((predicate, times, status))

    def _should_fail(self, received: Received) -> Failure | None:
        if self._failures:
            return self._failures.pop(0)
        for index, (predicate, times, status) in enumerate(self._fail_matching):
            if times > 0 and predicate(received):
                self._fail_matching[index] = (predicate, times - 1, status)
                return Failure(status)
        return None

    async def _ping(self, request: web.Request) -> web.Response:
        self.pings.append({"authorization": request.headers.get("Authorization"), "body": await request.json()})
        if self.ping_hangs:
            await self._stopping.wait()
        if self.ping_status != 200:
            return web.json_response({"errcode": "M_UNKNOWN", "error": "ping refused"}, status=self.ping_status)
        return web.json_response({})

    async def _transaction(self, request: web.Request) -> web.Response:
        received = Received(
            request.match_info["txn_id"],
            await request.read(),
            request.headers.get("Authorization"),
            dict(request.query),
            time.monotonic(),
        )
        async with self._arrived:
            self.requests.append(received)
            self._arrived.notify_all()
        if self._hung:
            await self._stopping.wait()
        await self._gate.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        failure = self._should_fail(received)
        if failure is not None and failure.status == HANG:
            await self._stopping.wait()  # the client times out and hangs up first
        if failure is not None and failure.status == RESET:
            return await _reset_mid_response(request)
        if failure is not None:
            return web.json_response({"errcode": "M_UNKNOWN"}, status=failure.status, headers=failure.headers)
        if received.authorization != f"Bearer {self.hs_token}":
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        return web.json_response({})

    async def wait_for_requests(self, count: int, timeout_s: float = 30.0) -> list[Received]:
        async def enough() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.requests) >= count)

        try:
            await asyncio.wait_for(enough(), timeout_s)
        except TimeoutError:
            raise AssertionError(f"{len(self.requests)} requests arrived, {count} expected") from None
        return list(self.requests)

    def delivered(self) -> list[Received]:
        """One entry per txn id, first arrival order; asserts retries never change a body."""
        seen: dict[str, Received] = {}
        for r in self.requests:
            first = seen.setdefault(r.txn_id, r)
            assert first.body == r.body, f"txn {r.txn_id} was resent with a different body"
        return list(seen.values())

    def delivered_events_ids(self) -> list[str]:
        return [e["event_id"] for e in self.delivered_events()]

    def delivered_events(self) -> list[dict[str, Any]]:
        return [e for r in self.delivered() for e in r.events]

    async def wait_for_events(self, count: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            events = self.delivered_events()
            if len(events) >= count:
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(events)} events delivered, {count} expected")
            async with self._arrived:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), max(0.01, deadline - time.monotonic()))
