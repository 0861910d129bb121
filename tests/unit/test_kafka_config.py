"""Every Kafka client's configuration comes from agents.kafka_config, with security, logger and durable producing."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from types import SimpleNamespace

import pytest
from faust.auth import SASLCredentials, SSLCredentials

from agents import kafka_config
from agents.kafka_config import (
    client_config,
    confluent_config,
    confluent_producer_config,
    faust_credentials,
    producer_config,
)
from agents.logs import KAFKA_LOGGER as LOGGER
from agents.topics import cluster_size
from streams.errors import ConfigError
from streams.kafka_settings import PLAINTEXT, KafkaSecurity
from streams.settings import Settings

AGENTS = Path(kafka_config.__file__).parent
SASL_SSL = KafkaSecurity(
    protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256", sasl_username="worker", sasl_password="secret"
)


def settings(security: KafkaSecurity = PLAINTEXT) -> Settings:
    return Settings(server_name="example.org", registrations_dir=Path("r"), kafka_security=security)


def test_plaintext_clients_get_servers_protocol_and_our_logger() -> None:
    assert confluent_config(settings(), **{"group.id": "g"}) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "logger": LOGGER,
        "security.protocol": "PLAINTEXT",
        "group.id": "g",
    }


def test_tls_and_sasl_reach_librdkafka_under_its_names(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "cert.pem", "key.pem"))
    security = KafkaSecurity(
        protocol="SASL_SSL",
        ssl_ca_location=ca,
        ssl_certificate_location=cert,
        ssl_key_location=key,
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="worker",
        sasl_password="secret",
    )
    config = client_config("kafka-1:9093,kafka-2:9093", security)
    assert config == {
        "bootstrap.servers": "kafka-1:9093,kafka-2:9093",
        "logger": LOGGER,
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": str(ca),
        "ssl.certificate.location": str(cert),
        "ssl.key.location": str(key),
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "worker",
        "sasl.password": "secret",
    }


def test_every_producer_is_acks_all_and_idempotent_whatever_its_caller_asks() -> None:
    config = producer_config("k:9092", **{"acks": 1, "enable.idempotence": False, "linger.ms": 5})
    assert (config["acks"], config["enable.idempotence"], config["linger.ms"]) == ("all", True, 5)
    config = confluent_producer_config(settings(SASL_SSL))
    assert (config["acks"], config["enable.idempotence"], config["sasl.username"]) == ("all", True, "worker")


def test_faust_gets_no_credentials_on_plaintext_and_sasl_credentials_otherwise() -> None:
    assert faust_credentials(KafkaSecurity()) is None
    sasl = faust_credentials(KafkaSecurity("SASL_PLAINTEXT", None, None, None, "PLAIN", "u", "p"))
    assert isinstance(sasl, SASLCredentials)
    assert (sasl.protocol.value, sasl.mechanism.value, sasl.username, sasl.password) == (
        "SASL_PLAINTEXT",
        "PLAIN",
        "u",
        "p",
    )
    over_tls = faust_credentials(SASL_SSL)
    assert isinstance(over_tls, SASLCredentials)
    assert over_tls.protocol.value == "SASL_SSL"
    assert isinstance(over_tls.ssl_context, ssl.SSLContext)
    assert over_tls.ssl_context.check_hostname  # the broker's name is verified, as librdkafka does
    assert "secret" not in repr(over_tls)


def test_faust_gets_an_ssl_context_with_tls_alone() -> None:
    credentials = faust_credentials(KafkaSecurity(protocol="SSL"))
    assert isinstance(credentials, SSLCredentials)
    assert credentials.context.verify_mode == ssl.CERT_REQUIRED


def test_an_unreadable_ca_is_a_config_error_naming_the_variable(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    with pytest.raises(ConfigError, match="KAFKA_SSL_CA_LOCATION"):
        faust_credentials(KafkaSecurity(protocol="SSL", ssl_ca_location=ca))


def test_no_agent_builds_a_kafka_client_configuration_of_its_own() -> None:
    """``bootstrap.servers`` is written in one module: every other client goes through it.

    The development broker's launcher is the exception: its admin client talks
    to the plaintext broker it started itself, never to the operator's cluster.
    """
    own_broker = {"kafka_config.py", "local_kafka.py", "local_cluster.py"}
    offenders = [
        path.name
        for path in AGENTS.glob("*.py")
        if path.name not in own_broker and re.search(r"[\"']bootstrap\.servers[\"']", path.read_text())
    ]
    assert offenders == []


def test_the_cluster_size_counts_brokers_that_are_down_but_hold_replicas() -> None:
    partition = SimpleNamespace(replicas=[1, 2, 3])
    topics = {"t": SimpleNamespace(partitions={0: partition})}
    metadata = SimpleNamespace(brokers={1: object(), 2: object()}, topics=topics)
    assert cluster_size(metadata) == 3
    assert cluster_size(SimpleNamespace(brokers={1: object()}, topics={})) == 1
