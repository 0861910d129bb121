"""The command line on expected errors: one line naming what is wrong, the right exit code, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agents.local_kafka import LocalKafka
from agents.topics import delete_prefixed
from tests.support.worker_process import WorkerProcess, free_port, write_registration

ROOT = Path(__file__).parents[2]


def run(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
        env={**os.environ, "MATRIX_SERVER_NAME": "example.org", **(env or {})},
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one line that says what is wrong; the Kafka client's own lines, deduplicated, may precede it."""
    assert "Traceback" not in result.stderr, result.stderr
    assert not any(line.startswith("%") for line in result.stderr.splitlines()), "raw librdkafka output"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    client_lines = [line for line in lines if " librdkafka: " in line]
    assert len(client_lines) <= 2, result.stderr
    assert len(lines) - len(client_lines) == 1, result.stderr
    return lines[-1]


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("appservice-streams ")


def test_an_unknown_log_level_is_refused_with_the_choices(tmp_path: Path) -> None:
    result = run("worker", "--registrations", str(tmp_path), "--log-level", "nonsense")
    assert result.returncode == 2
    assert "invalid choice: 'nonsense'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("port", ["80.5", "99999"])
def test_a_bad_http_port_fails_at_start_up_naming_the_variable(tmp_path: Path, port: str) -> None:
    write_registration(tmp_path, "bridge", "http://127.0.0.1:9")
    result = run("worker", "--registrations", str(tmp_path), env={"APPSERVICE_STREAMS_HTTP_PORT": port})
    assert result.returncode == 2
    assert "APPSERVICE_STREAMS_HTTP_PORT" in one_line_error(result)


def test_a_http_port_in_use_fails_before_kafka_is_touched(tmp_path: Path) -> None:
    write_registration(tmp_path, "bridge", "http://127.0.0.1:9")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            "worker",
            "--registrations",
            str(tmp_path),
            env={"APPSERVICE_STREAMS_HTTP_PORT": str(port), "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"},
        )
    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in one_line_error(result) and "in use" in result.stderr


def test_produce_from_a_missing_file_names_it(tmp_path: Path) -> None:
    result = run("produce", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 2
    assert "missing.jsonl" in one_line_error(result)


def test_produce_to_an_unreachable_broker_says_so_without_a_traceback(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"event_id": "$e", "type": "m.room.message", "sender": "@a:x", "room_id": "!r:x"}\n')
    result = run("produce", str(events), "--bootstrap-servers", f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert result.returncode == 1
    assert "did not take the records" in one_line_error(result)


def test_kafka_status_is_a_sentence(kafka: LocalKafka) -> None:
    result = run("kafka", "status", "--port", str(kafka.port))
    assert result.returncode == 0
    assert result.stdout.strip() == f"kafka running on 127.0.0.1:{kafka.port} (pid {kafka.status().pid})"


def test_an_appservice_ca_file_without_a_certificate_is_one_line_and_exit_2(kafka: LocalKafka, tmp_path: Path) -> None:
    write_registration(tmp_path / "registrations", "bridge", "https://127.0.0.1:9")
    not_a_ca = tmp_path / "ca.pem"
    not_a_ca.write_text("not a certificate\n")
    env = {
        "APPSERVICE_STREAMS_APPSERVICE_CA_FILE": str(not_a_ca),
        "APPSERVICE_STREAMS_HTTP_PORT": "0",
        "APPSERVICE_STREAMS_APP_ID": f"test-cli-{free_port()}",
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
    }
    result = run("worker", "--registrations", str(tmp_path / "registrations"), env=env)
    assert result.returncode == 2
    assert "APPSERVICE_STREAMS_APPSERVICE_CA_FILE" in one_line_error(result)
    delete_prefixed(kafka.bootstrap, (env["APPSERVICE_STREAMS_APP_ID"],))


def test_a_registration_file_readable_by_every_user_is_warned_about(registrations: Path, worker: WorkerProcess) -> None:
    path = write_registration(registrations, "bridge", "http://127.0.0.1:9")
    path.chmod(0o644)
    worker.start()
    assert f"registration {path} is readable by every user" in worker.log_text()
