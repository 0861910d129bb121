"""The npm ``matrix-appservice`` library as a real appservice peer, run by ``tests/peers/node/receiver.js``.

The receiver prints one JSON line per thing the library hands its listeners
(``{"kind": "event" | "ephemeral", "event": {...}}``) after a first
``{"kind": "ready", "port": N}`` line. A background thread collects them into
``received``; ``wait_for`` polls that list from the test's event loop.
Needs ``npm ci --prefix tests/peers/node`` once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

from tests.support.worker_process import free_port

NODE_DIR = Path(__file__).parents[1] / "peers" / "node"
RECEIVER = NODE_DIR / "receiver.js"
INSTALL_HINT = "run npm ci --prefix tests/peers/node"


class NodeAppservice:
    """``node tests/peers/node/receiver.js`` on 127.0.0.1, started by ``start()``, ended by ``stop()``."""

    def __init__(self, hs_token: str = "hs-secret", node: str = "node") -> None:
        self.hs_token = hs_token
        self.node = node
        self.port = 0
        self.returncode: int | None = None
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stderr: deque[str] = deque(maxlen=200)
        self._process: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the node appservice is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._stderr)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [line for line in self.received if line.get("kind") == kind]

    def launch(self) -> None:
        """Spawn node and the reader threads; ``start()`` also waits for the ready line.

        Raises:
            RuntimeError: already launched, or node or ``node_modules`` is missing.
        """
        if self._process is not None:
            raise RuntimeError("already started")
        if shutil.which(self.node) is None:
            raise RuntimeError(f"{self.node!r} is not on PATH: install Node.js 20+, then {INSTALL_HINT}")
        if not (NODE_DIR / "node_modules" / "matrix-appservice").is_dir():
            raise RuntimeError(f"{NODE_DIR / 'node_modules'} has no matrix-appservice: {INSTALL_HINT}")
        self._process = subprocess.Popen(
            [self.node, str(RECEIVER), "--port", str(free_port()), "--host", "127.0.0.1"],
            cwd=NODE_DIR,
            env={**os.environ, "RECEIVER_HS_TOKEN": self.hs_token},  # env, not argv: kept out of `ps`
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        self._spawn(self._read_stdout, self._process.stdout)
        self._spawn(self._read_stderr, self._process.stderr)

    async def start(self, timeout_s: float = 30.0) -> str:
        """``launch()``, wait for the receiver's ready line, return ``url``.

        Raises:
            RuntimeError: see ``launch()``.
            AssertionError: the receiver exited or stayed silent (its stderr is in the message).
        """
        self.launch()
        try:
            ready = await self.wait_for("ready", 1, timeout_s)
        except BaseException:
            self.stop()
            raise
        self.port = int(ready[0]["port"])
        return self.url

    async def wait_for(self, kind: str, count: int, timeout_s: float) -> list[dict[str, Any]]:
        """The first ``count`` received lines of ``kind`` (``"event"``, ``"ephemeral"``, ``"ready"``).

        Raises:
            AssertionError: fewer arrived within ``timeout_s``, or the receiver exited first.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            lines = self.of_kind(kind)
            if len(lines) >= count:
                return lines[:count]
            if self._process is None or self._process.poll() is not None:
                await asyncio.sleep(0.1)  # let the reader threads drain the pipes
                raise AssertionError(self._describe(f"node receiver exited while waiting for {count} {kind!r}"))
            if time.monotonic() >= deadline:
                raise AssertionError(self._describe(f"{len(lines)} of {count} {kind!r} lines after {timeout_s} s"))
            await asyncio.sleep(0.02)

    def stop(self, timeout_s: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout_s)
            self.returncode = process.returncode
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads.clear()

    def _describe(self, problem: str) -> str:
        stderr = self.stderr
        hint = f"\n({INSTALL_HINT})" if "Cannot find module" in stderr else ""
        code = self._process.poll() if self._process is not None else self.returncode
        return f"{problem}; exit code {code}; stderr:\n{stderr[-3000:] or '(empty)'}{hint}"

    def _spawn(self, target: Any, stream: IO[bytes]) -> None:
        thread = threading.Thread(target=target, args=(stream,), name=f"node-appservice-{target.__name__}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _read_stdout(self, stream: IO[bytes]) -> None:
        with contextlib.closing(stream):
            for raw in stream:
                text = raw.decode(errors="replace").strip()
                if not text:
                    continue
                try:
                    line = json.loads(text)
                except ValueError:
                    line = {"kind": "garbage", "text": text}
                if not isinstance(line, dict):
                    line = {"kind": "garbage", "text": text}
                with self._lock:
                    self.received.append(line)

    def _read_stderr(self, stream: IO[bytes]) -> None:
        with contextlib.closing(stream):
            for raw in stream:
                with self._lock:
                    self._stderr.append(raw.decode(errors="replace"))
