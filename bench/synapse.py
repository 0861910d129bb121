"""A real Synapse (matrix-synapse from PyPI, its own venv ``.venv-synapse``) on 127.0.0.1, SQLite.

Used by the end-to-end tests (``tests/integration/test_synapse_ingest.py``) and
the benchmark's ``synapse`` scenario.

``make synapse`` installs it (``make test`` depends on it): Synapse's
dependencies conflict with this project's, so it never enters ``.venv``.
The homeserver is configured as an operator would: ``--generate-config``,
then a patched ``homeserver.yaml`` (loopback listener on a free port, no
key servers, no open registration, a shared secret for the admin register
API, generous rate limits, the appservice registration files).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import yaml

ROOT = Path(__file__).parents[1]
SYNAPSE_PYTHON = ROOT / ".venv-synapse" / "bin" / "python"
SERVER_NAME = "localhost"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


GENEROUS = {"per_second": 1000, "burst_count": 1000}
USERS = f"@bridge_.*:{SERVER_NAME}"


@dataclass
class Synapse:
    home: Path
    appservice_files: list[Path]
    server_name: str = SERVER_NAME
    port: int = field(default_factory=free_port)
    shared_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen[bytes] | None = None
    modules: list[dict[str, Any]] = field(default_factory=list)  # homeserver.yaml `modules:`

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.home / "homeserver.yaml"

    def configure(self) -> None:
        """``--generate-config``, then the operator's edits."""
        self.home.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                *(str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "--server-name", self.server_name),
                *("--config-path", str(self.config_path), "--data-directory", str(self.home)),
                *("--generate-config", "--report-stats=no"),
            ],
            check=True,
            capture_output=True,
            cwd=self.home,
        )
        config = yaml.safe_load(self.config_path.read_text())
        config.update(
            {
                "listeners": [
                    {
                        "port": self.port,
                        "bind_addresses": ["127.0.0.1"],
                        "type": "http",
                        "tls": False,
                        "x_forwarded": False,
                        "resources": [{"names": ["client"], "compress": False}],
                    }
                ],
                "trusted_key_servers": [],
                "report_stats": False,
                "enable_registration": False,
                "registration_shared_secret": self.shared_secret,
                "app_service_config_files": [str(p) for p in self.appservice_files],
                "rc_message": GENEROUS,
                "rc_registration": GENEROUS,
                "rc_login": {"address": GENEROUS, "account": GENEROUS, "failed_attempts": GENEROUS},
                "rc_joins": {"local": GENEROUS, "remote": GENEROUS},
                "rc_invites": {"per_room": GENEROUS, "per_user": GENEROUS, "per_issuer": GENEROUS},
                "rc_room_creation": GENEROUS,
                "rc_presence": {"per_user": GENEROUS},
                "experimental_features": {
                    "msc2409_to_device_messages_enabled": True,
                    "msc3202_transaction_extensions": True,
                },
                "federation_domain_whitelist": [],
                "suppress_key_server_warning": True,
                "modules": self.modules,
            }
        )
        self.config_path.write_text(yaml.safe_dump(config))

    def set_modules(self, modules: list[dict[str, Any]]) -> None:
        """Change ``modules:`` in ``homeserver.yaml`` (takes effect at the next start)."""
        self.modules = modules
        config = yaml.safe_load(self.config_path.read_text())
        config["modules"] = modules
        self.config_path.write_text(yaml.safe_dump(config))

    def start(self, timeout_s: float = 60.0) -> float:
        """Start it and wait until ``/health`` answers; returns the seconds it took."""
        started = time.monotonic()
        log = open(self.home / "synapse.out", "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(
            [str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "--config-path", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.home,
            env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        )
        log.close()
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise AssertionError(f"synapse exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"synapse not up after {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        out = self.home / "synapse.out"
        log = self.home / "homeserver.log"
        text = (out.read_text(errors="replace") if out.exists() else "") + (
            log.read_text(errors="replace") if log.exists() else ""
        )
        return text[-4000:]

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind (the module's unstored batch is published again)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class Client:
    """Synapse's client-server API over aiohttp, as one user (or an appservice acting as one)."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str, user_id: str, as_user: bool = False):
        self.http = http
        self.base = base
        self.token = token
        self.user_id = user_id
        self._params = {"user_id": user_id} if as_user else {}
        self._txn = 0

    async def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.request(
            method, self.base + path, json=body, headers=headers, params=self._params
        ) as response:
            doc: dict[str, Any] = await response.json()
            assert response.status == 200, (method, path, response.status, doc)
            return doc

    async def create_room(self) -> str:
        return str((await self.call("POST", "/_matrix/client/v3/createRoom", {"preset": "private_chat"}))["room_id"])

    async def invite(self, room_id: str, user_id: str) -> None:
        await self.call("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/invite", {"user_id": user_id})

    async def join(self, room_id: str) -> None:
        await self.call("POST", f"/_matrix/client/v3/join/{quote(room_id)}", {})

    async def send_text(self, room_id: str, body: str) -> str:
        self._txn += 1
        path = f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/t{self._txn}-{time.monotonic_ns()}"
        return str((await self.call("PUT", path, {"msgtype": "m.text", "body": body}))["event_id"])

    async def typing(self, room_id: str) -> None:
        path = f"/_matrix/client/v3/rooms/{quote(room_id)}/typing/{quote(self.user_id)}"
        await self.call("PUT", path, {"typing": True, "timeout": 30_000})

    async def read_receipt(self, room_id: str, event_id: str) -> None:
        await self.call("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/receipt/m.read/{quote(event_id)}", {})


async def register_user(http: aiohttp.ClientSession, synapse: Synapse, localpart: str) -> Client:
    """A user made through the shared-secret admin API (``/_synapse/admin/v1/register``, HMAC-SHA1)."""
    url = synapse.url + "/_synapse/admin/v1/register"
    async with http.get(url) as response:
        nonce = (await response.json())["nonce"]
    password = secrets.token_hex(8)
    mac = hmac.new(synapse.shared_secret.encode(), digestmod=hashlib.sha1)
    for part in (nonce, localpart, password):
        mac.update(part.encode() + b"\x00")
    mac.update(b"notadmin")
    body = {"nonce": nonce, "username": localpart, "password": password, "admin": False, "mac": mac.hexdigest()}
    async with http.post(url, json=body) as response:
        doc = await response.json()
        assert response.status == 200, doc
    return Client(http, synapse.url, doc["access_token"], doc["user_id"])


async def register_appservice_user(
    http: aiohttp.ClientSession, synapse: Synapse, as_token: str, localpart: str
) -> Client:
    """A user in an appservice's namespace, registered and then acted as with its ``as_token``."""
    headers = {"Authorization": f"Bearer {as_token}"}
    body = {"type": "m.login.application_service", "username": localpart}
    async with http.post(synapse.url + "/_matrix/client/v3/register", json=body, headers=headers) as response:
        doc = await response.json()
        assert response.status == 200, doc
    return Client(http, synapse.url, as_token, doc["user_id"], as_user=True)


def registration_doc(
    appservice_id: str, url: str | None, as_token: str, exclusive: bool, aliases: str | None = None
) -> dict[str, Any]:
    """An appservice registration whose users namespace is ``@bridge_.*`` (RecordingAppservice's hs_token)."""
    return {
        "id": appservice_id,
        "url": url,
        "as_token": as_token,
        "hs_token": "hs-secret",  # RecordingAppservice's
        "sender_localpart": f"{appservice_id}bot",
        "namespaces": {
            "users": [{"regex": USERS, "exclusive": exclusive}],
            "aliases": [{"regex": aliases, "exclusive": False}] if aliases else [],
            "rooms": [],
        },
    }
