"""The worker's one way to build a Kafka admin client, and to say why a request to it failed.

Every start-up check that asks the cluster something (``agents.topics``,
``agents.state_check``) builds its client here, so a broker that refuses our
credentials or TLS handshake is told apart from one that cannot be reached in
one place: the first is a ``ConfigError`` (exit 2, a restart cannot mend it),
the second ``KafkaUnavailable`` (exit 69, the supervisor restarts the worker).
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from agents.kafka_config import client_config
from streams.errors import ConfigError, KafkaUnavailable
from streams.kafka_settings import KafkaSecurity

# The broker answered, and we could not agree: its SASL check, or the TLS handshake (a broker
# certificate our CA did not sign, say). A client certificate the broker refuses looks like
# any closed connection to librdkafka (_TRANSPORT), so it stays "cannot reach".
_REFUSED = {KafkaError._AUTHENTICATION, KafkaError._SSL}


class Admin(AdminClient):
    """An admin client that keeps the broker's refusals (wrong credentials, a failed TLS handshake)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.refusals: list[KafkaError] = []
        with_callback: dict[str, Any] = {**config, "error_cb": self._on_error}
        super().__init__(with_callback)

    def _on_error(self, error: KafkaError) -> None:  # from poll(): never raises
        if error.code() in _REFUSED:
            self.refusals.append(error)


def admin_client(bootstrap_servers: str, security: KafkaSecurity) -> Admin:
    """Raises: ConfigError: librdkafka refuses the configuration (a TLS key it cannot read, say)."""
    try:
        return Admin(client_config(bootstrap_servers, security))
    except KafkaException as exc:
        raise ConfigError(f"cannot configure a Kafka client for {bootstrap_servers}: {exc}") from exc


def failure(admin: Admin, bootstrap_servers: str, exc: KafkaException, doing: str) -> ConfigError | KafkaUnavailable:
    """The error to raise for ``exc``, a request of ``admin``'s that failed while ``doing`` something.

    ConfigError when the broker refused our credentials or TLS handshake (the
    line says so and names the variables, rather than librdkafka's "Broker
    transport failure"); otherwise KafkaUnavailable, naming ``doing``.
    """
    admin.poll(0)  # serves error_cb
    if admin.refusals:
        error = admin.refusals[-1]
        if error.code() == KafkaError._AUTHENTICATION:
            what, names = "refused the worker", "KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
        else:
            what, names = "failed the TLS handshake", "KAFKA_SSL_CA_LOCATION and KAFKA_SECURITY_PROTOCOL"
        return ConfigError(f"Kafka at {bootstrap_servers} {what}: {error.str()} (check {names})")
    return KafkaUnavailable(f"cannot {doing}: {exc}")


def cluster_metadata(admin: Admin, bootstrap_servers: str, timeout_s: float) -> Any:
    """The cluster's metadata.

    Raises:
        ConfigError: the broker refused our credentials or TLS handshake (``failure``).
        KafkaUnavailable: no answer from ``bootstrap_servers`` within ``timeout_s``.
    """
    try:
        return admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise failure(admin, bootstrap_servers, exc, f"reach Kafka at {bootstrap_servers}") from exc


__all__ = ["Admin", "admin_client", "cluster_metadata", "failure"]
