"""The metrics listener: ``/metrics``, ``/livez`` and ``/readyz`` on a thread of their own.

It runs a WSGI server on its own threads, not on the event loop, so a scrape
and a liveness probe are answered even when the loop is wedged, and the
liveness probe can say that it is:

* ``/livez``: 200 when the event loop runs a callback within
  ``LIVENESS_TIMEOUT_S`` and the router thread, once started, is alive;
  else 503 with the reason.
* ``/readyz``: 200 when the router is started, a partition assignment has
  landed and no rebalance is under way; else 503 with the reasons
  (``streams.observed.readiness``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from agents.metrics import Metrics
from streams.errors import ConfigError
from streams.observed import readiness

log = logging.getLogger(__name__)

LIVENESS_TIMEOUT_S = 5.0

StartResponse = Callable[..., Any]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Health:
    """What the probes look at; set from the loop, read from the metrics threads."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.router_started: Callable[[], bool] = lambda: False
        self.router_alive: Callable[[], bool] = lambda: False
        self.assigned = False  # an assignment landed and no revocation since
        self.rebalancing: Callable[[], bool] = lambda: False

    def loop_answers(self, timeout_s: float = LIVENESS_TIMEOUT_S) -> bool:
        loop = self.loop
        if loop is None:
            return False
        answered = threading.Event()
        try:
            loop.call_soon_threadsafe(answered.set)
        except RuntimeError:  # the loop is closed
            return False
        return answered.wait(timeout_s)

    def liveness(self) -> list[str]:
        reasons = []
        if not self.loop_answers():
            reasons.append(f"event loop did not answer within {LIVENESS_TIMEOUT_S} s")
        if self.router_started() and not self.router_alive():
            reasons.append("router thread ended")
        return reasons

    def readiness(self) -> list[str]:
        return readiness(
            router_started=self.router_started(),
            router_alive=self.router_alive(),
            assigned=self.assigned,
            rebalancing=self.rebalancing(),
        )


def build(metrics: Metrics, health: Health) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    exposition = make_wsgi_app(metrics.registry)

    def probe(reasons: list[str], start_response: StartResponse) -> list[bytes]:
        status = "503 Service Unavailable" if reasons else "200 OK"
        body = ("\n".join(reasons) if reasons else "ok").encode() + b"\n"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/livez":
            return probe(health.liveness(), start_response)
        if path == "/readyz":
            return probe(health.readiness(), start_response)
        if path == "/metrics":
            return exposition(environ, start_response)  # type: ignore[no-any-return]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics, /livez, /readyz\n"]

    return app


class MetricsServer:
    """Symmetric start/stop around a threaded WSGI server; no I/O in the constructor."""

    def __init__(self, host: str, port: int, metrics: Metrics, health: Health) -> None:
        self._host = host
        self._port = port
        self._app = build(metrics, health)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Raises: ConfigError when the address cannot be bound (e.g. the port is taken)."""
        if not self._port:
            return
        try:
            server = make_server(self._host, self._port, self._app, _Server, handler_class=_QuietHandler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {self._host}:{self._port} (APPSERVICE_STREAMS_METRICS_PORT): {exc}"
            ) from exc
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics (and /livez, /readyz)", self._host, self._port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
