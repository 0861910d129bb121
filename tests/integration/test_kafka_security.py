"""A worker on a broker that only speaks SASL_SSL with client certificates delivers, so every client got the settings.

The broker's one client listener requires TLS (our CA), a client certificate
and SASL PLAIN: a client missing any of them (a confluent-kafka consumer or
producer, an admin client, a side consumer, Faust's aiokafka consumer or
producer) cannot connect, and the worker would not deliver. Its plaintext
listener is used by the test alone, to delete its topics.

A second broker's client listener is SASL_PLAINTEXT with SCRAM-SHA-512 only,
the user's credentials added when its storage is formatted (KRaft has no
ZooKeeper to hold them): a worker delivers through it, and one given a wrong
password stops at start-up with one line and exit code 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from agents.kafka_config import client_config
from agents.local_kafka import LocalKafka
from agents.producer import EventProducer
from agents.topics import delete_prefixed
from streams.kafka_settings import KafkaSecurity
from tests.integration.events import message, numbers
from tests.integration.test_cli import one_line_error, run
from tests.support.recording_appservice import RecordingAppservice
from tests.support.worker_process import WorkerProcess, write_registration

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
PASSWORD = "worker-secret-7c1f"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(directory: Path) -> None:
    """A CA, the broker's certificate (for 127.0.0.1) and the worker's, all signed by the CA."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=appservice-streams test CA", cwd=directory)  # fmt: skip
    for name in ("broker", "worker"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=directory)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext", cwd=directory)  # fmt: skip
    keystore = (directory / "broker.key").read_text() + (directory / "broker.pem").read_text()
    (directory / "broker-keystore.pem").write_text(keystore)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalKafka, str, KafkaSecurity]]:
    """A lone broker with a SASL_SSL client listener; (broker, its SASL_SSL address, the worker's security)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificates")
    certs = tmp_path_factory.mktemp("certs")
    make_certificates(certs)
    single = int(os.environ.get("APPSERVICE_STREAMS_KAFKA_PORT") or 9092)
    port = int(os.environ.get("APPSERVICE_STREAMS_KAFKA_SECURED_PORT") or single + 14)
    secure = port + 2
    jaas = f'org.apache.kafka.common.security.plain.PlainLoginModule required user_worker="{PASSWORD}";'
    broker = LocalKafka(
        root=ROOT,
        port=port,  # plaintext: readiness checks and the test's clean-up
        controller_port=port + 1,
        node_dir="secured",
        max_heap="512m",
        extra_properties=(
            (
                "listeners",
                f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1},SASL_SSL://127.0.0.1:{secure}",
            ),
            ("advertised.listeners", f"PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{secure}"),
            ("listener.security.protocol.map", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL"),
            ("sasl.enabled.mechanisms", "PLAIN"),
            ("listener.name.sasl_ssl.plain.sasl.jaas.config", jaas),
            ("listener.name.sasl_ssl.ssl.keystore.type", "PEM"),
            ("listener.name.sasl_ssl.ssl.keystore.location", str(certs / "broker-keystore.pem")),
            ("listener.name.sasl_ssl.ssl.truststore.type", "PEM"),
            ("listener.name.sasl_ssl.ssl.truststore.location", str(certs / "ca.pem")),
            ("listener.name.sasl_ssl.ssl.client.auth", "required"),
        ),
    )
    broker.start()
    security = KafkaSecurity(
        protocol="SASL_SSL",
        ssl_ca_location=certs / "ca.pem",
        ssl_certificate_location=certs / "worker.pem",
        ssl_key_location=certs / "worker.key",
        sasl_mechanism="PLAIN",
        sasl_username="worker",
        sasl_password=PASSWORD,
    )
    yield broker, f"127.0.0.1:{secure}", security
    broker.stop()
    shutil.rmtree(broker.node_home, ignore_errors=True)


@contextlib.asynccontextmanager
async def delivering_worker(
    broker: LocalKafka,
    address: str,
    security: KafkaSecurity,
    env: dict[str, str],
    name: str,
    tmp_path: Path,
    registrations: Path,
) -> AsyncIterator[WorkerProcess]:
    """A worker of ``address`` (configured by ``env``) that delivered 20 events in order, its password never logged."""
    appservice = RecordingAppservice()
    await appservice.start()
    write_registration(registrations, "alpha", appservice.url)
    worker = WorkerProcess(
        registrations=registrations,
        app_id=name,
        input_topic=f"matrix.events.{name}",
        data_dir=tmp_path / "data",
        log_path=tmp_path / "worker.log",
        extra_env={"KAFKA_BOOTSTRAP_SERVERS": address, **env},
    )
    try:
        worker.start()
        producer = EventProducer(address, worker.input_topic, security)
        for n in range(20):
            producer.send_event(message(n, sender="@alpha_a:example.org"))
        await asyncio.to_thread(producer.flush, 30)
        events = await appservice.wait_for_events(20, timeout_s=30)
        assert numbers(events) == list(range(20))
        assert security.sasl_password and security.sasl_password not in worker.log_text()
        yield worker
    finally:
        worker.stop()
        await appservice.stop()
        delete_prefixed(broker.bootstrap, (worker.app_id, worker.input_topic))


async def test_a_worker_delivers_through_a_broker_that_requires_sasl_over_tls_with_client_certificates(
    secured: tuple[LocalKafka, str, KafkaSecurity], tmp_path: Path, registrations: Path, run_id: str
) -> None:
    broker, address, security = secured
    assert security.ssl_ca_location and security.ssl_certificate_location and security.ssl_key_location
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SSL_CA_LOCATION": str(security.ssl_ca_location),
        "KAFKA_SSL_CERTIFICATE_LOCATION": str(security.ssl_certificate_location),
        "KAFKA_SSL_KEY_LOCATION": str(security.ssl_key_location),
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "worker",
        "KAFKA_SASL_PASSWORD": PASSWORD,
    }
    async with delivering_worker(broker, address, security, env, f"secured-{run_id}", tmp_path, registrations):
        # And the broker does refuse what lacks any part of it.
        for lacking in (KafkaSecurity(), replace(security, ssl_certificate_location=None, ssl_key_location=None)):
            with pytest.raises(KafkaException):
                AdminClient(client_config(address, lacking, log_level=0)).list_topics(timeout=3)


def _security_env(security: KafkaSecurity) -> dict[str, str]:
    """The ``KAFKA_*`` variables that configure ``security`` (no TLS files)."""
    assert security.sasl_mechanism and security.sasl_username and security.sasl_password
    return {
        "KAFKA_SECURITY_PROTOCOL": security.protocol,
        "KAFKA_SASL_MECHANISM": security.sasl_mechanism,
        "KAFKA_SASL_USERNAME": security.sasl_username,
        "KAFKA_SASL_PASSWORD": security.sasl_password,
    }


@pytest.fixture(scope="module")
def scram() -> Iterator[tuple[LocalKafka, str, KafkaSecurity]]:
    """A lone broker with a SASL_PLAINTEXT client listener taking SCRAM-SHA-512 only; (broker, address, security).

    Its ports: ``APPSERVICE_STREAMS_KAFKA_SCRAM_PORT``, else the single
    broker's + 18 (plaintext, controller, SCRAM listener). The user's password
    is made for this run and given to ``kafka-storage format --add-scram``.
    """
    single = int(os.environ.get("APPSERVICE_STREAMS_KAFKA_PORT") or 9092)
    port = int(os.environ.get("APPSERVICE_STREAMS_KAFKA_SCRAM_PORT") or single + 18)
    sasl = port + 2
    password = secrets.token_hex(12)
    broker = LocalKafka(
        root=ROOT,
        port=port,  # plaintext: readiness checks and the test's clean-up
        controller_port=port + 1,
        node_dir="scram",
        max_heap="512m",
        extra_properties=(
            (
                "listeners",
                f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1},SASL_PLAINTEXT://127.0.0.1:{sasl}",
            ),
            ("advertised.listeners", f"PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl}"),
            (
                "listener.security.protocol.map",
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            ),
            ("sasl.enabled.mechanisms", "SCRAM-SHA-512"),
            (
                "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config",
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            ),
        ),
        format_args=("--add-scram", f"SCRAM-SHA-512=[name=worker,password={password}]"),
    )
    shutil.rmtree(broker.node_home, ignore_errors=True)  # credentials are only added to fresh storage
    broker.start()
    security = KafkaSecurity(
        protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", sasl_username="worker", sasl_password=password
    )
    yield broker, f"127.0.0.1:{sasl}", security
    broker.stop()
    shutil.rmtree(broker.node_home, ignore_errors=True)


async def test_a_worker_delivers_through_a_broker_that_takes_only_scram_sha_512(
    scram: tuple[LocalKafka, str, KafkaSecurity], tmp_path: Path, registrations: Path, run_id: str
) -> None:
    broker, address, security = scram
    env = _security_env(security)
    async with delivering_worker(broker, address, security, env, f"scram-{run_id}", tmp_path, registrations) as worker:
        # Every client authenticated: the router's group and Faust's (aiokafka) committed on the SCRAM listener.
        admin = AdminClient(client_config(address, security, log_level=0))
        groups = {g.group_id for g in admin.list_consumer_groups().result(10).valid}
        assert {worker.app_id, f"{worker.app_id}-router"} <= groups
        # And the listener refuses what does not authenticate with SCRAM-SHA-512.
        for refused in (
            KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="worker", sasl_password="x"),
            replace(security, sasl_mechanism="SCRAM-SHA-256"),
        ):
            with pytest.raises(KafkaException):
                AdminClient(client_config(address, refused, log_level=0)).list_topics(timeout=3)


def test_a_wrong_scram_password_stops_the_worker_at_start_up_with_one_line_and_exit_2(
    scram: tuple[LocalKafka, str, KafkaSecurity], registrations: Path, run_id: str
) -> None:
    _, address, security = scram
    write_registration(registrations, "alpha", "http://127.0.0.1:9")
    wrong = "not-" + (security.sasl_password or "")
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": address,
        **_security_env(replace(security, sasl_password=wrong)),
        "APPSERVICE_STREAMS_APP_ID": f"scram-wrong-{run_id}",
        "APPSERVICE_STREAMS_HTTP_PORT": "0",
        "APPSERVICE_STREAMS_METRICS_PORT": "0",
    }
    result = run("worker", "--registrations", str(registrations), env=env, timeout_s=90)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    print(line)
    assert address in line and "authentication" in line.lower(), line
    assert wrong not in result.stderr


def test_a_worker_that_does_not_trust_the_brokers_certificate_stops_with_one_line_and_exit_2(
    secured: tuple[LocalKafka, str, KafkaSecurity], tmp_path: Path, registrations: Path, run_id: str
) -> None:
    _, address, security = secured
    other = tmp_path / "other-ca"
    make_certificates(other)  # a CA that did not sign the broker's certificate
    write_registration(registrations, "alpha", "http://127.0.0.1:9")
    assert security.ssl_certificate_location and security.ssl_key_location
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": address,
        **_security_env(security),
        "KAFKA_SSL_CA_LOCATION": str(other / "ca.pem"),
        "KAFKA_SSL_CERTIFICATE_LOCATION": str(security.ssl_certificate_location),
        "KAFKA_SSL_KEY_LOCATION": str(security.ssl_key_location),
        "APPSERVICE_STREAMS_APP_ID": f"secured-ca-{run_id}",
        "APPSERVICE_STREAMS_HTTP_PORT": "0",
        "APPSERVICE_STREAMS_METRICS_PORT": "0",
    }
    result = run("worker", "--registrations", str(registrations), env=env, timeout_s=90)
    assert result.returncode == 2, result.stderr
    # librdkafka's own lines (3 here: the handshake failure in two wordings) come first; ours is the one other.
    assert "Traceback" not in result.stderr, result.stderr
    ours = [line for line in result.stderr.splitlines() if line.strip() and " librdkafka: " not in line]
    assert len(ours) == 1, result.stderr
    print(ours[0])
    assert f"Kafka at {address} failed the TLS handshake" in ours[0] and "KAFKA_SSL_CA_LOCATION" in ours[0], ours[0]
