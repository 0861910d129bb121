"""One exception tree: client-library errors mapped once at each seam, and the tree mapped to exit codes once.

Each seam test makes the client library (confluent-kafka, here) fail the
way it does and checks that what comes out is ours, names what failed, and
chains the library's exception.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

import agents.ingest
import agents.positions
import agents.rooms_store
import agents.state_check
from agents import cli, kafka_admin
from agents.changelog_producer import ChangelogProducer
from agents.ingest import IngestConfig, KafkaSink
from agents.positions import GapDetected
from agents.producer import EventProducer
from agents.rooms_store import RoomsStore
from streams import errors
from streams.errors import (
    AppserviceStreamsError,
    BrokerLostData,
    ChangelogDeliveryError,
    ConfigError,
    InfrastructureError,
    KafkaRequestFailed,
    KafkaUnavailable,
    LocalKafkaError,
    LocalStoreFailed,
    RegistrationError,
)
from streams.ingest import Position, firehose_registration
from streams.registration import parse_registration
from streams.settings import Settings


def refused(*args: Any, **kwargs: Any) -> Any:
    raise KafkaException("Local: Broker transport failure")


def test_every_exception_class_of_the_project_is_in_the_tree() -> None:
    ours = [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, Exception)]
    assert all(issubclass(kind, AppserviceStreamsError) for kind in ours)
    assert issubclass(GapDetected, errors.InvariantBroken)
    # Their historical homes still name them.
    assert agents.positions.GapDetected is GapDetected
    from agents.changelog_producer import ChangelogDeliveryError as from_producer
    from agents.local_kafka import LocalKafkaError as from_launcher

    assert (from_producer, from_launcher) == (ChangelogDeliveryError, LocalKafkaError)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConfigError("x"), 2),
        (RegistrationError("r.yaml", "id", "missing"), 2),
        (KafkaUnavailable("x"), 69),
        (BrokerLostData("x"), 2),
        (KafkaRequestFailed("x"), 1),
        (ChangelogDeliveryError("x"), 1),
        (LocalKafkaError("x"), 1),
        (errors.InvariantBroken("x"), 70),
        (GapDetected("x"), 70),
        (errors.BadRecord("x"), 1),
    ],
)
def test_the_cli_maps_the_tree_to_exit_codes(exc: AppserviceStreamsError, code: int) -> None:
    assert cli.exit_code(exc) == code


def test_an_unreachable_cluster_at_start_up_is_kafka_unavailable_naming_the_servers() -> None:
    admin = SimpleNamespace(list_topics=refused, poll=lambda timeout: 0, refusals=[])
    with pytest.raises(KafkaUnavailable, match="cannot reach Kafka at k1:9092") as caught:
        kafka_admin.cluster_metadata(admin, "k1:9092", 1.0)
    assert isinstance(caught.value.__cause__, KafkaException)


def test_a_topic_that_cannot_be_described_is_kafka_unavailable_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    future = SimpleNamespace(result=refused)
    admin = SimpleNamespace(describe_topics=lambda collection: {"app.inbox": future}, poll=lambda t: 0, refusals=[])
    monkeypatch.setattr(agents.state_check, "admin_client", lambda servers, security: admin)
    settings = Settings(server_name="hs", registrations_dir=tmp_path, bootstrap_servers="k1:9092")
    with pytest.raises(KafkaUnavailable, match=r"cannot describe topic app\.inbox on k1:9092"):
        agents.state_check.topic_ids(settings, ["app.inbox"])


def test_a_topic_description_the_broker_refuses_our_credentials_for_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    future = SimpleNamespace(result=refused)
    refusal = KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error")
    admin = SimpleNamespace(describe_topics=lambda c: {"app.inbox": future}, poll=lambda t: 0, refusals=[refusal])
    monkeypatch.setattr(agents.state_check, "admin_client", lambda servers, security: admin)
    settings = Settings(server_name="hs", registrations_dir=tmp_path, bootstrap_servers="k1:9092")
    with pytest.raises(ConfigError, match=r"Kafka at k1:9092 refused the worker.*KAFKA_SASL_PASSWORD"):
        agents.state_check.topic_ids(settings, ["app.inbox"])


def test_state_built_from_replaced_topics_is_broker_lost_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings(server_name="hs", registrations_dir=tmp_path, data_dir=tmp_path / "data")
    ids = {name: "old" for name in agents.state_check.state_topics(settings)}
    monkeypatch.setattr(agents.state_check, "topic_ids", lambda settings, names: ids)
    agents.state_check.check_local_state(settings)  # records the ids
    ids = {name: "new" for name in ids}
    with pytest.raises(BrokerLostData, match="--reset-state"):
        agents.state_check.check_local_state(settings)
    assert cli.exit_code(BrokerLostData("x")) == 2, "as before: the systemd unit does not restart it"


def test_event_producer_failures_are_kafka_request_failed_naming_the_topic() -> None:
    producer = EventProducer("127.0.0.1:9", "matrix.events.test")
    producer._producer = SimpleNamespace(flush=lambda timeout: 3, produce=refused)  # type: ignore[assignment]
    with pytest.raises(KafkaRequestFailed, match=r"matrix.events.test: 3 records not acknowledged"):
        producer.flush(0.1)
    with pytest.raises(KafkaRequestFailed, match=r"matrix\.events\.test: record refused") as caught:
        producer.send_envelope(b'{"v": 1, "kind": "device_lists", "user_id": "@a:hs", "change": "left"}')
    assert isinstance(caught.value.__cause__, KafkaException)


def ingest_config() -> IngestConfig:
    doc = firehose_registration("firehose", "http://127.0.0.1:1", "as-token", "hs-token")
    return IngestConfig(parse_registration(doc, Path("firehose.yaml")), "k1:9092", kafka_timeout_s=0.1)


def test_an_ingest_that_cannot_start_its_producer_is_kafka_request_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agents.ingest, "Producer", refused)
    with pytest.raises(KafkaRequestFailed, match="Kafka at k1:9092"):
        KafkaSink(ingest_config()).start()


class TransactionRefused:
    aborted = False

    def begin_transaction(self) -> None: ...

    def produce(self, topic: str, key: bytes, value: bytes) -> None: ...

    def commit_transaction(self, timeout: float) -> None:
        raise KafkaException("Broker: Producer fenced")

    def abort_transaction(self, timeout: float) -> None:
        self.aborted = True


def test_an_ingest_transaction_kafka_refuses_is_kafka_request_failed_and_aborted() -> None:
    sink = KafkaSink(ingest_config())
    producer = sink._producer = TransactionRefused()
    with pytest.raises(KafkaRequestFailed, match=r"transaction t1 to matrix\.events: .*fenced"):
        sink.write(Position.of("t1", b"{}"), [(b"!r:hs", b"{}")])
    assert producer.aborted and sink._producer is None


class QueueFull:
    def produce(self, topic: str, **record: Any) -> None:
        raise BufferError("Local: Queue full")


async def test_a_changelog_record_refused_on_the_spot_is_a_changelog_delivery_error() -> None:
    producer = ChangelogProducer({}, lambda exc, where: None, lambda config: QueueFull())  # type: ignore[arg-type, return-value]
    try:
        with pytest.raises(ChangelogDeliveryError, match=r"app-appservices-changelog\[4\]: not queued"):
            producer.produce("app-appservices-changelog", [(4, b"k", b"v")])
    finally:
        await asyncio.to_thread(producer.close)


class UnansweredConsumer:
    def __init__(self, config: dict[str, Any]) -> None: ...

    committed = get_watermark_offsets = refused

    def close(self) -> None: ...


def test_the_position_guards_side_reads_are_kafka_request_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agents.positions, "Consumer", UnansweredConsumer)
    with pytest.raises(KafkaRequestFailed, match=r"app.inbox\[2\]: offset committed by app not read"):
        agents.positions.committed_offset("k1:9092", "app", "app.inbox", 2, timeout_s=0.1)
    with pytest.raises(KafkaRequestFailed, match=r"app.inbox\[2\]: offsets 5..8 not checked"):
        agents.positions.records_between("k1:9092", "app.inbox", 2, 5, 9, timeout_s=0.1)


def test_the_cli_reports_our_exceptions_as_one_line_with_their_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def no_java(self: Any) -> None:
        raise LocalKafkaError("no java executable: set JAVA_HOME or put java on PATH")

    monkeypatch.setattr("agents.local_kafka.LocalKafka.start", no_java)
    assert cli.main(["kafka", "start", "--home", str(tmp_path), "--port", "9"]) == 1
    assert (
        capsys.readouterr().err
        == "appservice-streams kafka start: no java executable: set JAVA_HOME or put java on PATH\n"
    )


def test_infrastructure_errors_are_not_config_errors() -> None:
    for kind in (KafkaUnavailable, KafkaRequestFailed, BrokerLostData, LocalStoreFailed, LocalKafkaError):
        assert issubclass(kind, InfrastructureError) and not issubclass(kind, ConfigError)


def test_a_room_store_that_cannot_be_opened_is_local_store_failed(tmp_path: Path) -> None:
    (tmp_path / "p3").write_text("a file where the partition's RocksDB folder goes")
    store = RoomsStore(tmp_path, {}, "app.rooms")
    with pytest.raises(LocalStoreFailed, match=r"rooms of input partition 3: cannot open .*p3"):
        store.assign([3])


def test_rooms_that_cannot_be_restored_are_kafka_request_failed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(agents.rooms_store, "Consumer", UnansweredConsumer)
    store = RoomsStore(tmp_path, {}, "app.rooms")
    with pytest.raises(KafkaRequestFailed, match=r"restoring rooms of partition 1: .*transport failure"):
        store.assign([1])
    store.close()
