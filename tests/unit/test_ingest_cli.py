"""``appservice-streams ingest --print-registration``: a registration the homeserver and this project both accept."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agents.cli import main
from streams.registration import parse_registration


def printed(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["ingest", "--print-registration", "--url", "http://127.0.0.1:8010", *args]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert isinstance(doc, dict)
    return doc


def test_the_registration_claims_every_room_and_no_user(capsys: pytest.CaptureFixture[str]) -> None:
    doc = printed(capsys)
    registration = parse_registration(doc, Path("firehose.yaml"))
    assert registration.users == ()
    assert [n.regex for n in registration.rooms] == ["!.*"] and not registration.rooms[0].exclusive
    assert registration.receive_ephemeral and registration.push_ephemeral_msc2409 and registration.msc3202
    assert (registration.id, registration.url) == ("appservice-streams-ingest", "http://127.0.0.1:8010")


def test_tokens_are_fresh_random_and_distinct(capsys: pytest.CaptureFixture[str]) -> None:
    first, second = printed(capsys), printed(capsys)
    tokens = {first["as_token"], first["hs_token"], second["as_token"], second["hs_token"]}
    assert len(tokens) == 4
    assert all(isinstance(t, str) and len(t) >= 40 for t in tokens)


def test_users_are_claimed_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    doc = printed(capsys, "--claim-users", "@bridge_.*:example.org", "--id", "hs1-firehose")
    registration = parse_registration(doc, Path("firehose.yaml"))
    assert [n.regex for n in registration.users] == ["@bridge_.*:example.org"]
    assert registration.id == "hs1-firehose"


def test_config_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["ingest", "--print-registration", "--claim-users", "(unclosed", "--url", "http://x"]) == 2
    assert main(["ingest", "--print-registration"]) == 2
    assert main(["ingest", "--registration", str(tmp_path / "missing.yaml")]) == 2
    assert main(["ingest", "--registration", str(tmp_path / "missing.yaml"), "--listen", "nope"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 4
    assert all(line.startswith("appservice-streams ingest: ") for line in errors)
