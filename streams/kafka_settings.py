"""How the worker reaches and uses a Kafka cluster: TLS/SASL, replication, retention.

Read from the environment by ``streams.settings.from_environment`` (and by the
``produce`` command, which has no other settings). Every value is checked here,
at start-up, and a bad one is a ``ConfigError`` naming the variable (or the
file): a worker must not find out at its first connection that its key file
is missing. Building client configurations from these values is
``agents.kafka_config``'s job; choosing replication for a given cluster is
``replication_for`` below (pure).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from streams.errors import ConfigError

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

# The replication "auto" chooses on a cluster of at least AUTO_MIN_BROKERS brokers.
AUTO_MIN_BROKERS = 3
AUTO_REPLICATION_FACTOR = 3
AUTO_MIN_INSYNC_REPLICAS = 2

RF_VARIABLE = "APPSERVICE_STREAMS_REPLICATION_FACTOR"
MIN_ISR_VARIABLE = "APPSERVICE_STREAMS_MIN_INSYNC_REPLICAS"
RETENTION_VARIABLE = "APPSERVICE_STREAMS_RETENTION_MS"


@dataclass(frozen=True)
class KafkaSecurity:
    """How clients authenticate and encrypt: librdkafka's names, one field each.

    The password is left out of ``repr`` (and so of every log line that prints
    settings).
    """

    protocol: str = "PLAINTEXT"
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")


PLAINTEXT = KafkaSecurity()


@dataclass(frozen=True)
class Replication:
    """Replication of the topics a worker creates; ``None`` is "auto": decided from the cluster's size."""

    factor: int | None = None
    min_insync_replicas: int | None = None


AUTO = Replication()


@dataclass(frozen=True)
class TopicReplication:
    """What ``replication_for`` decided for one cluster."""

    factor: int
    min_insync_replicas: int


def replication_for(wanted: Replication, brokers: int) -> TopicReplication:
    """The replication factor and min ISR for topics created on a cluster of ``brokers`` brokers.

    Auto: 3 and 2 on three brokers or more (one broker may be down and every
    write still lands on two), else 1 and 1. An explicit factor with an auto
    min ISR gets ``min(2, factor - 1)`` (at least 1).

    Raises:
        ConfigError: the factor exceeds the brokers (Kafka would refuse every
            topic), or the min ISR exceeds the factor (every write would fail).
    """
    if wanted.factor is None:
        factor = AUTO_REPLICATION_FACTOR if brokers >= AUTO_MIN_BROKERS else 1
    else:
        factor = wanted.factor
        if factor > brokers:
            raise ConfigError(f"{RF_VARIABLE}={factor} but the Kafka cluster has {brokers} broker(s)")
    if wanted.min_insync_replicas is None:
        isr = AUTO_MIN_INSYNC_REPLICAS if factor >= AUTO_REPLICATION_FACTOR else max(1, min(2, factor - 1))
    else:
        isr = wanted.min_insync_replicas
        if isr > factor:
            raise ConfigError(
                f"{MIN_ISR_VARIABLE}={isr} exceeds the replication factor {factor}: no write could succeed"
            )
    return TopicReplication(factor, isr)


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value if value else None


def _file(env: Mapping[str, str], name: str) -> Path | None:
    raw = _get(env, name)
    if raw is None:
        return None
    path = Path(raw)
    if not path.is_file():
        raise ConfigError(f"environment variable {name}: file {path} does not exist")
    return path


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str | None) -> str | None:
    raw = _get(env, name)
    if raw is None:
        return default
    if raw.upper() not in choices:
        raise ConfigError(f"environment variable {name}={raw!r} is not one of {', '.join(choices)}")
    return raw.upper()


def security_from_environment(env: Mapping[str, str]) -> KafkaSecurity:
    """``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SSL_*`` and ``KAFKA_SASL_*``, checked.

    Raises:
        ConfigError: naming the variable: an unknown protocol or mechanism, a
            file that does not exist, TLS files without TLS, SASL settings
            without SASL, a certificate without its key (or the reverse), SASL
            without a username or password.
    """
    protocol = _choice(env, "KAFKA_SECURITY_PROTOCOL", SECURITY_PROTOCOLS, "PLAINTEXT")
    assert protocol is not None
    security = KafkaSecurity(
        protocol=protocol,
        ssl_ca_location=_file(env, "KAFKA_SSL_CA_LOCATION"),
        ssl_certificate_location=_file(env, "KAFKA_SSL_CERTIFICATE_LOCATION"),
        ssl_key_location=_file(env, "KAFKA_SSL_KEY_LOCATION"),
        sasl_mechanism=_choice(env, "KAFKA_SASL_MECHANISM", SASL_MECHANISMS, None),
        sasl_username=_get(env, "KAFKA_SASL_USERNAME"),
        sasl_password=_get(env, "KAFKA_SASL_PASSWORD"),
    )
    tls = {
        "KAFKA_SSL_CA_LOCATION": security.ssl_ca_location,
        "KAFKA_SSL_CERTIFICATE_LOCATION": security.ssl_certificate_location,
        "KAFKA_SSL_KEY_LOCATION": security.ssl_key_location,
    }
    sasl = {
        "KAFKA_SASL_MECHANISM": security.sasl_mechanism,
        "KAFKA_SASL_USERNAME": security.sasl_username,
        "KAFKA_SASL_PASSWORD": security.sasl_password,
    }
    if not security.uses_tls:
        for name, value in tls.items():
            if value is not None:
                raise ConfigError(f"{name} is set but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS")
    if (security.ssl_certificate_location is None) != (security.ssl_key_location is None):
        raise ConfigError("KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION go together: set both or neither")
    if security.uses_sasl:
        for name in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
            if sasl[name] is None:
                raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs {name}")
        if security.sasl_mechanism is None:
            security = replace(security, sasl_mechanism="PLAIN")
    else:
        for name, text in sasl.items():
            if text is not None:
                raise ConfigError(f"{name} is set but KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL")
    return security


def _auto_or_count(env: Mapping[str, str], name: str) -> int | None:
    raw = _get(env, name)
    if raw is None or raw.strip().lower() == "auto":
        return None
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ConfigError(f"environment variable {name}={raw!r} is neither 'auto' nor a whole number of at least 1")
    return int(raw)


def replication_from_environment(env: Mapping[str, str]) -> Replication:
    """``APPSERVICE_STREAMS_REPLICATION_FACTOR`` and ``…_MIN_INSYNC_REPLICAS``: ``auto`` (default) or a count.

    Raises:
        ConfigError: naming the variable: not ``auto`` nor a count, or a min
            ISR above an explicit factor.
    """
    wanted = Replication(_auto_or_count(env, RF_VARIABLE), _auto_or_count(env, MIN_ISR_VARIABLE))
    factor, isr = wanted.factor, wanted.min_insync_replicas
    if factor is not None and isr is not None and isr > factor:
        raise ConfigError(f"{MIN_ISR_VARIABLE}={isr} exceeds {RF_VARIABLE}={factor}: no write could succeed")
    return wanted


def retention_from_environment(env: Mapping[str, str]) -> int | None:
    """``APPSERVICE_STREAMS_RETENTION_MS`` for the inbox and delay topics: None (Kafka's default), -1 (forever) or ms.

    Raises:
        ConfigError: naming the variable, for anything else.
    """
    raw = _get(env, RETENTION_VARIABLE)
    if raw is None:
        return None
    text = raw.strip()
    if text == "-1":
        return -1
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(
            f"environment variable {RETENTION_VARIABLE}={raw!r} is not a whole number of milliseconds (or -1: forever)"
        )
    return int(text)
