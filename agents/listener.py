"""A listening socket bound at start-up, before Kafka is touched.

The worker's HTTP API and the ingest both bind their address first: a port in
use or a bad address is then an error at start-up (one line, exit 2), not a
crash once Kafka is joined (exit 70, which a supervisor restarts forever).
The bound socket is handed to aiohttp (``web.SockSite``).
"""

from __future__ import annotations

import socket

from streams.errors import ConfigError


def listen(host: str, port: int, *, purpose: str, setting: str) -> socket.socket:
    """A non-blocking socket listening on ``host:port``.

    Raises: ConfigError ``cannot {purpose} {host}:{port} ({setting}): …``.
    """
    try:
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
        listener.setblocking(False)
    except OSError as exc:
        raise ConfigError(f"cannot {purpose} {host}:{port} ({setting}): {exc.strerror or exc}") from exc
    return listener
