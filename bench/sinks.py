"""Sink appservices: one aiohttp server process for all of a scenario's appservices.

Run as ``python -m bench.sinks`` (``SinkProcess`` starts it); it listens on a
free loopback port and prints ``port N``. An appservice named ``x`` is
registered with URL ``http://127.0.0.1:N/x``, so its transactions arrive at
``PUT /x/_matrix/app/v1/transactions/{txnId}``. It runs in its own process so
that answering HTTP does not steal time from the load generator's pacing or
from the bench's own clock reads.

Modes per appservice (``POST /_bench/mode/{name}`` with body ``ok|down|hang``):
``ok`` answers ``200 {}``; ``down`` answers 503; ``hang`` never answers until
the mode changes (then 503). Pings (``POST /{name}/_matrix/app/v1/ping``)
get 200 ``{}`` when ``ok``, else 503.

On the first 2xx of each txn id (an appservice deduplicates by txn id) every
event is recorded: arrival time (``time.time_ns()`` after the body is read),
its ``content.ts_ns`` (stamped by the load generator at produce time) and
``content.seq``. Every request is recorded too (time, txn id, events, status).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import urllib.request
from array import array
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from bench import procs

MODES = ("ok", "down", "hang")
_OK = b"{}"
_DOWN = b'{"errcode":"M_UNKNOWN","error":"bench sink is down"}'


@dataclass
class _Appservice:
    index: int
    mode: str = "ok"
    released: asyncio.Event = field(default_factory=asyncio.Event)
    txns: set[int] = field(default_factory=set)
    requests: int = 0
    ok: int = 0
    resent: int = 0
    events: int = 0
    first_ns: int = 0
    last_ns: int = 0


class SinkServer:
    def __init__(self) -> None:
        self.appservices: dict[str, _Appservice] = {}
        self.names: list[str] = []
        # One row per recorded event / per request, as parallel int64 columns.
        self.ev_arrival, self.ev_ts, self.ev_seq, self.ev_as = array("q"), array("q"), array("q"), array("q")
        self.rq_arrival, self.rq_as, self.rq_txn, self.rq_events, self.rq_status = (
            array("q"),
            array("q"),
            array("q"),
            array("q"),
            array("q"),
        )

    def appservice(self, name: str) -> _Appservice:
        found = self.appservices.get(name)
        if found is None:
            found = self.appservices[name] = _Appservice(len(self.names))
            self.names.append(name)
        return found

    async def transaction(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time_ns()
        state = self.appservice(request.match_info["name"])
        txn = int(request.match_info["txn_id"])
        state.requests += 1
        if state.mode == "hang":
            self._log_request(state, now, txn, 0, 0)
            await state.released.wait()
        if state.mode != "ok":
            self._log_request(state, now, txn, 0, 503)
            return web.Response(status=503, body=_DOWN, content_type="application/json")
        state.ok += 1
        if txn in state.txns:
            state.resent += 1
            self._log_request(state, now, txn, 0, 200)
            return web.Response(body=_OK, content_type="application/json")
        state.txns.add(txn)
        events = orjson.loads(body)["events"]
        for event in events:
            content = event.get("content") or {}
            self.ev_arrival.append(now)
            self.ev_ts.append(int(content.get("ts_ns", 0)))
            self.ev_seq.append(int(content.get("seq", -1)))
            self.ev_as.append(state.index)
        state.events += len(events)
        state.first_ns = state.first_ns or now
        state.last_ns = now
        self._log_request(state, now, txn, len(events), 200)
        return web.Response(body=_OK, content_type="application/json")

    def _log_request(self, state: _Appservice, now: int, txn: int, events: int, status: int) -> None:
        self.rq_arrival.append(now)
        self.rq_as.append(state.index)
        self.rq_txn.append(txn)
        self.rq_events.append(events)
        self.rq_status.append(status)

    async def ping(self, request: web.Request) -> web.Response:
        """``POST /_matrix/app/v1/ping``: 200 ``{}`` when up (a homeserver's ping then retries at once)."""
        state = self.appservice(request.match_info["name"])
        if state.mode != "ok":
            return web.Response(status=503, body=_DOWN, content_type="application/json")
        return web.Response(body=_OK, content_type="application/json")

    async def set_mode(self, request: web.Request) -> web.Response:
        mode = (await request.text()).strip()
        if mode not in MODES:
            return web.Response(status=400, text=f"mode must be one of {MODES}")
        state = self.appservice(request.match_info["name"])
        state.mode = mode
        if mode == "hang":
            state.released.clear()
        else:
            state.released.set()
        return web.Response(text=mode)

    async def stats(self, request: web.Request) -> web.Response:
        per = {
            name: {
                "mode": s.mode,
                "requests": s.requests,
                "ok": s.ok,
                "txns": len(s.txns),
                "resent": s.resent,
                "events": s.events,
                "first_ns": s.first_ns,
                "last_ns": s.last_ns,
            }
            for name, s in self.appservices.items()
        }
        return web.Response(body=orjson.dumps({"names": self.names, "per": per}), content_type="application/json")

    async def events(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        doc = {
            "names": self.names,
            "next": len(self.ev_arrival),
            "arrival": self.ev_arrival[since:].tolist(),
            "ts": self.ev_ts[since:].tolist(),
            "seq": self.ev_seq[since:].tolist(),
            "as": self.ev_as[since:].tolist(),
        }
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    async def requests(self, request: web.Request) -> web.Response:
        doc = {
            "names": self.names,
            "arrival": self.rq_arrival.tolist(),
            "as": self.rq_as.tolist(),
            "txn": self.rq_txn.tolist(),
            "events": self.rq_events.tolist(),
            "status": self.rq_status.tolist(),
        }
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_put("/{name}/_matrix/app/v1/transactions/{txn_id}", self.transaction)
        app.router.add_post("/{name}/_matrix/app/v1/ping", self.ping)
        app.router.add_post("/_bench/mode/{name}", self.set_mode)
        app.router.add_get("/_bench/stats", self.stats)
        app.router.add_get("/_bench/events", self.events)
        app.router.add_get("/_bench/requests", self.requests)
        return app


async def _serve() -> None:
    runner = web.AppRunner(SinkServer().app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"port {port}", flush=True)
    await asyncio.Event().wait()  # until SIGTERM / SIGKILL


def main() -> None:
    argparse.ArgumentParser(prog="python -m bench.sinks", description=__doc__.split("\n\n")[0]).parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve())


# ------------------------------------------------------------ the bench's side


class SinkProcess:
    """Starts ``python -m bench.sinks`` and talks to it over its control endpoints."""

    def __init__(self) -> None:
        self.process: Any = None
        self.port = 0

    def start(self, timeout_s: float = 20.0) -> None:
        """Raises: RuntimeError when the sink does not come up."""
        self.process = procs.spawn(["-m", "bench.sinks"], stdout_pipe=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if not line.startswith("port "):
            raise RuntimeError(f"sink process did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        if self.process is not None:
            procs.kill(self.process)  # nothing to save, and a hung request would hold a graceful stop

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def _call(self, path: str, data: bytes | None = None) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data)
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return orjson.loads(raw) if response.headers.get("Content-Type", "").startswith("application/json") else raw

    def set_mode(self, name: str, mode: str) -> None:
        self._call(f"/_bench/mode/{name}", mode.encode())

    def stats(self) -> dict[str, dict[str, Any]]:
        return dict(self._call("/_bench/stats")["per"])

    def delivered(self) -> int:
        return sum(s["events"] for s in self.stats().values())

    def events(self) -> dict[str, Any]:
        return dict(self._call("/_bench/events"))

    def requests(self) -> dict[str, Any]:
        return dict(self._call("/_bench/requests"))

    def pid(self) -> int:
        return int(self.process.pid)


__all__ = ["MODES", "SinkProcess", "SinkServer"]

if __name__ == "__main__":
    main()
