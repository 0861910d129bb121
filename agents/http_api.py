"""The worker's HTTP API, for routes a reverse proxy sends here instead of the homeserver.

Today: ``POST /_matrix/client/v1/appservice/{appserviceId}/ping``. Any worker
may answer it, whoever owns the appservice: on success the ``PingSucceeded``
goes through the inbox, keyed by appservice ID, to the owner, whose machine
retries a backing-off transaction at once. The inbox is the control topic.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import orjson
from aiohttp import web

from agents.listener import listen
from agents.pipeline import Pipeline
from agents.senders import report
from streams.machine import PingSucceeded
from streams.matrix import AppserviceID
from streams.ping import Answer, answer, authorize

log = logging.getLogger(__name__)

PING_ROUTE = "/_matrix/client/v1/appservice/{appservice_id}/ping"


def _json(result: Answer) -> web.Response:
    return web.Response(status=result.status, body=orjson.dumps(result.body), content_type="application/json")


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer ") :]
    return request.query.get("access_token")


def build(pipeline: Pipeline) -> web.Application:
    async def ping(request: web.Request) -> web.Response:
        appservice_id = request.match_info["appservice_id"]
        checked = authorize(pipeline.registrations, appservice_id, _token(request))
        if isinstance(checked, Answer):
            return _json(checked)
        try:
            doc = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError:
            return _json(Answer(400, {"errcode": "M_NOT_JSON", "error": "Body is not JSON"}))
        transaction_id = doc.get("transaction_id") if isinstance(doc, dict) else None
        started = time.monotonic()
        outcome = await pipeline.client.ping(checked, transaction_id if isinstance(transaction_id, str) else None)
        result = answer(outcome, round((time.monotonic() - started) * 1000))
        log.info("ping of appservice %s: HTTP %d %s", appservice_id, result.status, result.body.get("errcode", ""))
        if result.status == 200:
            await report(pipeline, AppserviceID(appservice_id), PingSucceeded())
        return _json(result)

    app = web.Application()
    app.router.add_post(PING_ROUTE, ping)
    return app


def bind(host: str, port: int) -> socket.socket | None:
    """The HTTP API's listening socket, bound before anything else starts; None when port is 0 (off).

    Raises: ConfigError naming the setting.
    """
    if not port:
        return None
    return listen(host, port, purpose="serve the HTTP API on", setting="APPSERVICE_STREAMS_HTTP_HOST/_PORT")


class HttpApi:
    """Symmetric start/stop around an aiohttp runner; no I/O in the constructor."""

    def __init__(self, pipeline: Pipeline, listener: socket.socket | None = None) -> None:
        self._pipeline = pipeline
        self._listener = listener
        self._runner: web.AppRunner | None = None
        self.started = asyncio.Event()

    async def start(self) -> None:
        """Serve on the listener bound at start-up (``bind``), if any."""
        settings = self._pipeline.settings
        if self._listener is not None:
            self._runner = web.AppRunner(build(self._pipeline), access_log=None)
            await self._runner.setup()
            await web.SockSite(self._runner, self._listener).start()
            log.info("HTTP API on http://%s:%d", settings.http_host, settings.http_port)
        self.started.set()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
