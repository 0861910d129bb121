"""Every Kafka client's configuration, built in one place from the settings.

Two client libraries talk to Kafka: confluent-kafka (router, changelog
producer, admin clients, side consumers, ``EventProducer``) and aiokafka under
Faust (the deliverer's consumer, Faust's producer). Both get the same TLS and
SASL settings from ``streams.kafka_settings.KafkaSecurity``:

* ``client_config(bootstrap, security, **extra)`` / ``confluent_config(settings, **extra)``:
  a confluent-kafka configuration, with librdkafka's log lines sent through
  ``agents.logs``;
* ``producer_config`` / ``confluent_producer_config``: the same, plus
  ``acks=all`` and idempotence, which ``extra`` cannot turn off: a record is
  only acknowledged once every in-sync replica has it, and a retried send
  never writes a record twice nor out of order;
* ``faust_options(settings)``: the ``faust.App`` keyword arguments
  (``broker_credentials``), and ``make_producer_idempotent(app)``: Faust's
  producer with aiokafka's idempotence on (Faust only turns it on inside
  transactions).
"""

from __future__ import annotations

import ssl
from typing import Any

from agents.logs import KAFKA_LOGGER as KAFKA_LOG
from streams.errors import ConfigError
from streams.kafka_settings import PLAINTEXT, KafkaSecurity
from streams.settings import Settings

# What every producer gets, whatever its caller asks for.
DURABLE_PRODUCER = {"acks": "all", "enable.idempotence": True}


def _security_config(security: KafkaSecurity) -> dict[str, Any]:
    config: dict[str, Any] = {"security.protocol": security.protocol}
    for key, path in (
        ("ssl.ca.location", security.ssl_ca_location),
        ("ssl.certificate.location", security.ssl_certificate_location),
        ("ssl.key.location", security.ssl_key_location),
    ):
        if path is not None:
            config[key] = str(path)
    if security.uses_sasl:
        config["sasl.mechanism"] = security.sasl_mechanism
        config["sasl.username"] = security.sasl_username
        config["sasl.password"] = security.sasl_password
    return config


def client_config(bootstrap_servers: str, security: KafkaSecurity = PLAINTEXT, **extra: Any) -> dict[str, Any]:
    """A confluent-kafka client configuration: servers, security, our logger, then ``extra``."""
    return {
        "bootstrap.servers": bootstrap_servers,
        "logger": KAFKA_LOG,
        **_security_config(security),
        **extra,
    }


def producer_config(bootstrap_servers: str, security: KafkaSecurity = PLAINTEXT, **extra: Any) -> dict[str, Any]:
    """``client_config`` with ``acks=all`` and idempotence, which ``extra`` cannot override."""
    return {**client_config(bootstrap_servers, security, **extra), **DURABLE_PRODUCER}


def confluent_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """``client_config`` for the worker's cluster."""
    return client_config(settings.bootstrap_servers, settings.kafka_security, **extra)


def confluent_producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """``producer_config`` for the worker's cluster."""
    return producer_config(settings.bootstrap_servers, settings.kafka_security, **extra)


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext | None:
    """The TLS context aiokafka uses: the CA (else the system's), our certificate and key; None without TLS.

    The broker's certificate and host name are verified, as librdkafka does
    by default.

    Raises:
        ConfigError: the CA, certificate or key cannot be loaded (naming the variables).
    """
    if not security.uses_tls:
        return None
    ca = security.ssl_ca_location
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"KAFKA_SSL_CA_LOCATION={ca}: cannot load it as a CA bundle: {exc}") from exc
    cert, key = security.ssl_certificate_location, security.ssl_key_location
    if cert is not None and key is not None:
        try:
            context.load_cert_chain(str(cert), str(key))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"KAFKA_SSL_CERTIFICATE_LOCATION={cert} / KAFKA_SSL_KEY_LOCATION={key}: cannot load them: {exc}"
            ) from exc
    return context


def faust_credentials(security: KafkaSecurity) -> Any:
    """``faust.App(broker_credentials=…)`` for ``security`` (``faust.SSLCredentials`` or
    ``faust.SASLCredentials``); None for PLAINTEXT.

    Raises:
        ConfigError: as ``ssl_context``.
    """
    # Imported here: EventProducer's users (a homeserver) need not load Faust.
    from faust.auth import SASLCredentials, SSLCredentials

    context = ssl_context(security)
    if security.uses_sasl:
        return SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password,
            ssl_context=context,  # SASL_SSL when given
            mechanism=security.sasl_mechanism,
        )
    if context is not None:
        return SSLCredentials(context)
    return None


def faust_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``faust.App``: credentials and durable producing.

    Raises:
        ConfigError: as ``ssl_context``.
    """
    return {"broker_credentials": faust_credentials(settings.kafka_security), "producer_acks": -1}


def make_producer_idempotent(app: Any) -> None:
    """Have ``app`` (a ``faust.App``, not started) create its producer with aiokafka's idempotence on.

    Faust turns idempotence on only inside transactions; its producer here
    carries retry timers, resumes and reported outcomes. No I/O. Call it
    before anything reads ``app.producer`` or ``app.consumer`` (Faust's
    consumer creates the producer): a producer built before keeps Faust's
    class (``tests/unit/test_faust_hooks.py``).
    """
    from faust.transport.drivers.aiokafka import Producer

    class IdempotentProducer(Producer):
        def _settings_extra(self) -> dict[str, Any]:
            return {"acks": "all", "enable_idempotence": True}

    app.transport.Producer = IdempotentProducer
