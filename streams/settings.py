"""Worker settings: one frozen value, read from the environment and flags.

Defaults suit one worker on a laptop with the local broker; every figure an
operator may need to change is here, nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from streams.errors import ConfigError
from streams.kafka_settings import (
    AUTO,
    PLAINTEXT,
    KafkaSecurity,
    Replication,
    replication_from_environment,
    retention_from_environment,
    security_from_environment,
)

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


@dataclass(frozen=True)
class Settings:
    server_name: str
    registrations_dir: Path
    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    app_id: str = "appservice-streams"
    input_topic: str = "matrix.events"
    input_partitions: int = 8
    partitions: int = 8  # inbox, delay topic and state table
    data_dir: Path = Path(".data")
    retry_unit_ms: int = 1000
    connect_timeout_s: float = 15.0
    response_timeout_s: float = 60.0
    legacy_authorization: bool = False
    # Extra CA certificates to trust for appservices' HTTPS (e.g. a self-signed one); the
    # system's store is always trusted, and certificates are always verified.
    appservice_ca_file: Path | None = None
    # Agents take what is queued, up to batch_max, as one batch (see
    # agents.batching); batch_within_s is only the wait for a batch whose
    # queue never looks empty.
    batch_max: int = 500
    batch_within_s: float = 0.05
    commit_interval_s: float = 1.0
    # How long the broker may hold a fetch open when no data is there. The
    # consumer has one fetch in flight per broker, and partitions whose
    # records it still buffers are left out of it, so their next records wait
    # for this fetch to end: it bounds the latency of every hop (Faust
    # hard-codes 1,500 ms; see agents.worker).
    fetch_max_wait_ms: int = 10
    # Static group membership: a worker restarted under the same instance id
    # takes its partitions back at once instead of waiting out the session.
    instance_id: str | None = None
    session_timeout_s: float = 10.0
    # The worker's HTTP API (appservice ping; 0 turns it off).
    http_host: str = "127.0.0.1"
    http_port: int = 8009
    # Kafka clusters (streams.kafka_settings; clients built by agents.kafka_config).
    # The password inside kafka_security is left out of repr.
    kafka_security: KafkaSecurity = PLAINTEXT
    replication: Replication = AUTO  # auto until agents.topics asks the cluster
    retention_ms: int | None = None  # inbox and delay topics; None: the broker's default
    # Prometheus metrics, /livez and /readyz, served from a thread of their
    # own (0 turns them off).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9109
    # How often both groups' consumer lag is taken (records and seconds).
    lag_interval_s: float = 5.0
    # Where the router starts on input partitions its group never committed
    # (a new app id): "latest", only what is produced from now on, or
    # "earliest", the topic's whole retained history.
    start_from: str = "latest"
    # How every log line is written: "text" (one line, human-readable) or "json" (one JSON object a line).
    log_format: str = "text"

    @property
    def inbox_topic(self) -> str:
        return f"{self.app_id}.inbox"

    @property
    def delay_topic(self) -> str:
        return f"{self.app_id}.delay"

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.app_id}.dead-letter"

    @property
    def appservices_changelog_topic(self) -> str:
        """Faust's changelog of the ``appservices`` table (Faust names it; the worker creates it first)."""
        return f"{self.app_id}-appservices-changelog"

    @property
    def rooms_topic(self) -> str:
        """The router's room state changelog: compacted, partitioned like the input."""
        return f"{self.app_id}.rooms"

    @property
    def router_group(self) -> str:
        """The router's consumer group on the input topic (the Faust agents' group is ``app_id``)."""
        return f"{self.app_id}-router"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / self.app_id


def _number(env: Mapping[str, str], name: str, default: float, *, zero_allowed: bool = False) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not a number") from None
    if value < 0 or (value == 0 and not zero_allowed):
        raise ConfigError(f"environment variable {name}={raw!r} must be {'0 or more' if zero_allowed else 'positive'}")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    """A TCP port from ``name``: a whole number 0-65535 (0: off, or any free port where so documented).

    Raises: ConfigError naming the variable (``80.5`` was truncated to 80, ``99999`` passed).
    """
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not raw.strip().isdigit() or not 0 <= int(raw) <= 65535:
        raise ConfigError(f"environment variable {name}={raw!r} is not a port (a whole number from 0 to 65535)")
    return int(raw)


def _existing_file(env: Mapping[str, str], name: str) -> Path | None:
    """Raises: ConfigError naming the variable when it names no readable file."""
    raw = env.get(name)
    if not raw:
        return None
    path = Path(raw)
    if not path.is_file():
        raise ConfigError(f"environment variable {name}={raw!r} names no file")
    return path


START_FROM = ("latest", "earliest")


def _start_from(env: Mapping[str, str]) -> str:
    raw = env.get("APPSERVICE_STREAMS_START_FROM") or "latest"
    if raw not in START_FROM:
        raise ConfigError(f"environment variable APPSERVICE_STREAMS_START_FROM={raw!r} must be 'latest' or 'earliest'")
    return raw


LOG_FORMATS = ("text", "json")


def log_format(env: Mapping[str, str]) -> str:
    """``APPSERVICE_STREAMS_LOG_FORMAT``: ``text`` (the default) or ``json`` (JSON lines).

    Raises: ConfigError naming the variable.
    """
    raw = env.get("APPSERVICE_STREAMS_LOG_FORMAT") or "text"
    if raw not in LOG_FORMATS:
        raise ConfigError(f"environment variable APPSERVICE_STREAMS_LOG_FORMAT={raw!r} must be 'text' or 'json'")
    return raw


def input_partitions(env: Mapping[str, str]) -> int:
    """Partitions of the input topic when it is created (the worker and the ingest both may).

    Raises: ConfigError naming the variable.
    """
    return int(_number(env, "APPSERVICE_STREAMS_INPUT_PARTITIONS", 8))


def from_environment(registrations_dir: Path, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from ``APPSERVICE_STREAMS_*`` / ``KAFKA_BOOTSTRAP_SERVERS``, then ``overrides``.

    Raises:
        ConfigError: a missing server name, a malformed number or start position, naming the variable.
    """
    env = os.environ if env is None else env
    server_name = overrides.pop("server_name", None) or env.get("MATRIX_SERVER_NAME")
    if not server_name or not isinstance(server_name, str):
        raise ConfigError("the homeserver's server name is required: --server-name or MATRIX_SERVER_NAME")
    values: dict[str, object] = {
        "server_name": server_name,
        "registrations_dir": registrations_dir,
        "bootstrap_servers": env.get("KAFKA_BOOTSTRAP_SERVERS") or DEFAULT_BOOTSTRAP,
        "app_id": env.get("APPSERVICE_STREAMS_APP_ID") or "appservice-streams",
        "input_topic": env.get("APPSERVICE_STREAMS_INPUT_TOPIC") or "matrix.events",
        "data_dir": Path(env.get("APPSERVICE_STREAMS_DATA_DIR") or ".data"),
        "retry_unit_ms": int(_number(env, "APPSERVICE_STREAMS_RETRY_UNIT_MS", 1000)),
        "connect_timeout_s": _number(env, "APPSERVICE_STREAMS_CONNECT_TIMEOUT_S", 15.0),
        "response_timeout_s": _number(env, "APPSERVICE_STREAMS_RESPONSE_TIMEOUT_S", 60.0),
        "partitions": int(_number(env, "APPSERVICE_STREAMS_PARTITIONS", 8)),
        "input_partitions": input_partitions(env),
        "instance_id": env.get("APPSERVICE_STREAMS_INSTANCE_ID") or None,
        "session_timeout_s": _number(env, "APPSERVICE_STREAMS_SESSION_TIMEOUT_S", 10.0),
        "http_host": env.get("APPSERVICE_STREAMS_HTTP_HOST") or "127.0.0.1",
        "http_port": _port(env, "APPSERVICE_STREAMS_HTTP_PORT", 8009),
        "metrics_host": env.get("APPSERVICE_STREAMS_METRICS_HOST") or "127.0.0.1",
        "metrics_port": _port(env, "APPSERVICE_STREAMS_METRICS_PORT", 9109),
        "lag_interval_s": _number(env, "APPSERVICE_STREAMS_LAG_INTERVAL_S", 5.0),
        "fetch_max_wait_ms": int(_number(env, "APPSERVICE_STREAMS_FETCH_MAX_WAIT_MS", 10)),
        "start_from": _start_from(env),
        "log_format": log_format(env),
        "legacy_authorization": env.get("APPSERVICE_STREAMS_LEGACY_AUTHORIZATION", "").lower() in ("1", "true", "yes"),
        "appservice_ca_file": _existing_file(env, "APPSERVICE_STREAMS_APPSERVICE_CA_FILE"),
        "kafka_security": security_from_environment(env),
        "replication": replication_from_environment(env),
        "retention_ms": retention_from_environment(env),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)  # type: ignore[arg-type]
