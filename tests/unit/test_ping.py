"""Who may ping an appservice, and what the homeserver answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.outcome import ConnectFailed, Delivered, HttpError, Outcome, TimedOut
from streams.ping import Answer, answer, authorize
from streams.registration import Registration, parse_registration


def registration(appservice_id: str, url: str | None) -> Registration:
    doc = {
        "id": appservice_id,
        "url": url,
        "as_token": f"as-{appservice_id}",
        "hs_token": "hs",
        "sender_localpart": f"{appservice_id}bot",
        "namespaces": {"users": [], "rooms": [], "aliases": []},
    }
    return parse_registration(doc, Path(f"{appservice_id}.yaml"))


REGISTRATIONS = {"a": registration("a", "http://127.0.0.1:9"), "b": registration("b", None)}


def test_the_appservices_own_token_is_accepted() -> None:
    assert authorize(REGISTRATIONS, "a", "as-a") is REGISTRATIONS["a"]


@pytest.mark.parametrize(
    "appservice_id,token,status,errcode",
    [
        ("a", None, 401, "M_MISSING_TOKEN"),
        ("a", "as-b", 403, "M_FORBIDDEN"),
        ("a", "wrong", 403, "M_FORBIDDEN"),
        ("a", "as-ä", 403, "M_FORBIDDEN"),  # non-ASCII: compared as bytes, no TypeError
        ("a", "as-a ", 403, "M_FORBIDDEN"),
        ("nobody", "as-a", 403, "M_FORBIDDEN"),
        ("b", "as-b", 400, "M_URL_NOT_SET"),
    ],
)
def test_refusals(appservice_id: str, token: str | None, status: int, errcode: str) -> None:
    refusal = authorize(REGISTRATIONS, appservice_id, token)
    assert isinstance(refusal, Answer)
    assert (refusal.status, refusal.body["errcode"]) == (status, errcode)


@pytest.mark.parametrize(
    "outcome,status,errcode",
    [
        (HttpError(500, body='{"errcode":"M_UNKNOWN"}'), 502, "M_BAD_STATUS"),
        (ConnectFailed("ConnectionRefusedError"), 502, "M_CONNECTION_FAILED"),
        (TimedOut("response"), 504, "M_CONNECTION_TIMEOUT"),
    ],
)
def test_failed_pings(outcome: Outcome, status: int, errcode: str) -> None:
    result = answer(outcome, 12)
    assert (result.status, result.body["errcode"]) == (status, errcode)


def test_bad_status_quotes_the_appservices_status_and_body() -> None:
    result = answer(HttpError(418, body="teapot"), 3)
    assert (result.body["status"], result.body["body"]) == (418, "teapot")


def test_a_successful_ping_reports_its_duration() -> None:
    assert answer(Delivered(200), 42) == Answer(200, {"duration_ms": 42})
