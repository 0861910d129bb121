"""Kafka settings: TLS/SASL checked at start-up, replication decided from the cluster's size."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.kafka_settings import (
    AUTO,
    Replication,
    TopicReplication,
    replication_for,
    replication_from_environment,
    retention_from_environment,
    security_from_environment,
)
from streams.settings import from_environment

BASE = {"MATRIX_SERVER_NAME": "example.org"}


@pytest.mark.parametrize(
    ("wanted", "brokers", "decided"),
    [
        (Replication(), 1, TopicReplication(1, 1)),
        (Replication(), 2, TopicReplication(1, 1)),
        (Replication(), 3, TopicReplication(3, 2)),
        (Replication(), 5, TopicReplication(3, 2)),
        (Replication(factor=2), 3, TopicReplication(2, 1)),
        (Replication(factor=3), 3, TopicReplication(3, 2)),
        (Replication(factor=5), 6, TopicReplication(5, 2)),
        (Replication(factor=1), 3, TopicReplication(1, 1)),
        (Replication(min_insync_replicas=3), 4, TopicReplication(3, 3)),
        (Replication(factor=3, min_insync_replicas=1), 3, TopicReplication(3, 1)),
    ],
)
def test_replication_is_decided_from_the_cluster_size(
    wanted: Replication, brokers: int, decided: TopicReplication
) -> None:
    assert replication_for(wanted, brokers) == decided


def test_a_factor_above_the_brokers_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"APPSERVICE_STREAMS_REPLICATION_FACTOR=3 .* 1 broker"):
        replication_for(Replication(factor=3), 1)


def test_an_auto_factor_with_a_min_isr_above_it_is_refused() -> None:
    with pytest.raises(ConfigError, match="APPSERVICE_STREAMS_MIN_INSYNC_REPLICAS=2 exceeds"):
        replication_for(Replication(min_insync_replicas=2), 1)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, Replication()),
        ({"APPSERVICE_STREAMS_REPLICATION_FACTOR": "auto"}, Replication()),
        ({"APPSERVICE_STREAMS_REPLICATION_FACTOR": "AUTO", "APPSERVICE_STREAMS_MIN_INSYNC_REPLICAS": ""}, AUTO),
        ({"APPSERVICE_STREAMS_REPLICATION_FACTOR": "3"}, Replication(3, None)),
        (
            {"APPSERVICE_STREAMS_REPLICATION_FACTOR": "3", "APPSERVICE_STREAMS_MIN_INSYNC_REPLICAS": "2"},
            Replication(3, 2),
        ),
    ],
)
def test_replication_from_the_environment(env: dict[str, str], expected: Replication) -> None:
    assert replication_from_environment(env) == expected


@pytest.mark.parametrize("value", ["0", "-1", "three", "2.5"])
@pytest.mark.parametrize("name", ["APPSERVICE_STREAMS_REPLICATION_FACTOR", "APPSERVICE_STREAMS_MIN_INSYNC_REPLICAS"])
def test_a_bad_replication_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        replication_from_environment({name: value})


def test_a_min_isr_above_an_explicit_factor_is_refused() -> None:
    with pytest.raises(ConfigError, match="MIN_INSYNC_REPLICAS=3 exceeds APPSERVICE_STREAMS_REPLICATION_FACTOR=2"):
        replication_from_environment(
            {"APPSERVICE_STREAMS_REPLICATION_FACTOR": "2", "APPSERVICE_STREAMS_MIN_INSYNC_REPLICAS": "3"}
        )


def test_retention_defaults_to_the_brokers_and_takes_ms_or_forever() -> None:
    assert retention_from_environment({}) is None
    assert retention_from_environment({"APPSERVICE_STREAMS_RETENTION_MS": "604800000"}) == 604_800_000
    assert retention_from_environment({"APPSERVICE_STREAMS_RETENTION_MS": "-1"}) == -1
    for bad in ("0", "-2", "7d", "1.5"):
        with pytest.raises(ConfigError, match="APPSERVICE_STREAMS_RETENTION_MS"):
            retention_from_environment({"APPSERVICE_STREAMS_RETENTION_MS": bad})


def test_plaintext_is_the_default() -> None:
    security = security_from_environment({})
    assert (security.protocol, security.uses_tls, security.uses_sasl) == ("PLAINTEXT", False, False)


def test_an_unknown_protocol_or_mechanism_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="KAFKA_SECURITY_PROTOCOL='TLS'"):
        security_from_environment({"KAFKA_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(ConfigError, match="KAFKA_SASL_MECHANISM='GSSAPI'"):
        security_from_environment(
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "GSSAPI",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": "p",
            }
        )


def test_a_missing_tls_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    with pytest.raises(ConfigError, match=f"KAFKA_SSL_CA_LOCATION: file {missing} does not exist"):
        security_from_environment({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_LOCATION": str(missing)})


def test_tls_files_without_tls_are_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ConfigError, match="KAFKA_SSL_CA_LOCATION is set but KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT"):
        security_from_environment(
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SSL_CA_LOCATION": str(ca),
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": "p",
            }
        )


def test_a_certificate_needs_its_key(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION go together"):
        security_from_environment({"KAFKA_SECURITY_PROTOCOL": "ssl", "KAFKA_SSL_CERTIFICATE_LOCATION": str(cert)})


def test_sasl_needs_a_username_and_password_and_defaults_to_plain() -> None:
    with pytest.raises(ConfigError, match="KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_PASSWORD"):
        security_from_environment({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"})
    security = security_from_environment(
        {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}
    )
    assert security.sasl_mechanism == "PLAIN"


def test_sasl_settings_without_sasl_are_refused() -> None:
    with pytest.raises(ConfigError, match="KAFKA_SASL_USERNAME is set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT"):
        security_from_environment({"KAFKA_SASL_USERNAME": "u"})


def test_the_sasl_password_never_appears_in_the_settings_repr() -> None:
    settings = from_environment(
        Path("r"),
        {
            **BASE,
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "worker",
            "KAFKA_SASL_PASSWORD": "hunter2-secret",
        },
    )
    assert settings.kafka_security.sasl_password == "hunter2-secret"
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in str(settings)
    assert "SCRAM-SHA-512" in repr(settings)


def test_settings_carry_the_kafka_values_from_the_environment() -> None:
    settings = from_environment(
        Path("r"),
        {
            **BASE,
            "APPSERVICE_STREAMS_REPLICATION_FACTOR": "3",
            "APPSERVICE_STREAMS_MIN_INSYNC_REPLICAS": "2",
            "APPSERVICE_STREAMS_RETENTION_MS": "86400000",
        },
    )
    assert (settings.replication, settings.retention_ms) == (Replication(3, 2), 86_400_000)
    with pytest.raises(ConfigError, match="KAFKA_SECURITY_PROTOCOL"):
        from_environment(Path("r"), {**BASE, "KAFKA_SECURITY_PROTOCOL": "nope"})
