"""What the worker exports about itself: outcome labels, appservice gauges, ownership, lag, readiness."""

from __future__ import annotations

import pytest

from streams.machine import AppserviceState, Phase, Txn
from streams.matrix import AppserviceID, TxnID
from streams.observed import OwnedAppservices, group_lag, readiness, router_lag, undelivered, view
from streams.outcome import ConnectFailed, Delivered, FailureReason, HttpError, Outcome, TimedOut, failure_reason

BRIDGE, BOT = AppserviceID("bridge"), AppserviceID("bot")


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (Delivered(200), None),
        (HttpError(400, "M_BAD_JSON"), FailureReason.CLIENT_ERROR),
        (HttpError(404), FailureReason.CLIENT_ERROR),
        (HttpError(429, retry_after_ms=1000), FailureReason.CLIENT_ERROR),
        (HttpError(500), FailureReason.SERVER_ERROR),
        (HttpError(503), FailureReason.SERVER_ERROR),
        (HttpError(200, "not JSON"), FailureReason.BAD_RESPONSE),
        (HttpError(302), FailureReason.BAD_RESPONSE),
        (HttpError(101), FailureReason.BAD_RESPONSE),
        (TimedOut("connect"), FailureReason.TIMEOUT),
        (TimedOut("response"), FailureReason.TIMEOUT),
        (ConnectFailed("ConnectionRefusedError"), FailureReason.CONNECT),
        (None, FailureReason.INTERNAL),
    ],
)
def test_every_outcome_maps_to_one_fixed_failure_label(outcome: Outcome | None, reason: FailureReason | None) -> None:
    assert failure_reason(outcome) is reason


def test_failure_labels_are_the_documented_fixed_set() -> None:
    assert [r.value for r in FailureReason] == ["4xx", "5xx", "timeout", "connect", "bad_response", "internal"]


def test_an_idle_appservice_is_up_with_nothing_behind() -> None:
    v = view(AppserviceState(), now_ms=5_000)
    assert (v.up, v.phase, v.backlog, v.down_for_s, v.attempt) == (True, Phase.IDLE, (0, 0, 0, 0), 0.0, 0)


def test_the_backlog_counts_parked_and_in_flight_items_per_kind() -> None:
    state = AppserviceState(phase=Phase.SENDING, inflight=Txn(TxnID(1), (100, 3, 0, 1)), queued=(250, 0, 7, 0))
    assert view(state, now_ms=0).backlog == (350, 3, 7, 1)
    assert undelivered(state) == 361  # what the DOWN and UP log lines say


def test_a_down_appservice_reports_how_long_it_has_been_down() -> None:
    state = AppserviceState(
        phase=Phase.BACKING_OFF,
        inflight=Txn(TxnID(1), (1, 0, 0, 0)),
        attempt=3,
        retry_at_ms=90_000,
        down_since_ms=10_000,
        queued=(30, 0, 0, 0),
    )
    v = view(state, now_ms=70_500)
    assert (v.up, v.phase, v.backlog[0], v.down_for_s, v.attempt) == (False, Phase.BACKING_OFF, 31, 60.5, 3)
    assert view(state, now_ms=9_000).down_for_s == 0  # another worker's clock behind: never negative


def sending(txn_id: int, events: int) -> AppserviceState:
    return AppserviceState(phase=Phase.SENDING, inflight=Txn(TxnID(txn_id), (events, 0, 0, 0)))


def test_only_appservices_of_owned_partitions_are_kept() -> None:
    owned = OwnedAppservices()
    owned.stepped(BRIDGE, 1, sending(7, 2))  # before any assignment: not owned for sure
    assert owned.snapshot() == []
    owned.assigned([1, 2])
    owned.stepped(BRIDGE, 1, sending(7, 2))
    owned.stepped(BOT, 3, sending(8, 1))  # a partition of another worker
    assert owned.snapshot() == [(BRIDGE, sending(7, 2))]
    assert owned.owns(BRIDGE) and not owned.owns(BOT)


def test_the_latest_step_wins_and_gives_the_counts_of_the_txn_in_flight() -> None:
    owned = OwnedAppservices()
    owned.assigned([1])
    owned.stepped(BRIDGE, 1, sending(7, 2))
    owned.stepped(BRIDGE, 1, sending(9, 100))
    assert owned.snapshot() == [(BRIDGE, sending(9, 100))]
    assert owned.inflight(BRIDGE, 9) == (100, 0, 0, 0)
    assert owned.inflight(BRIDGE, 7) is None  # no longer in flight
    assert owned.inflight(BOT, 9) is None


def test_a_revocation_drops_every_series_and_the_next_assignment_keeps_only_its_partitions() -> None:
    owned = OwnedAppservices()
    owned.assigned([1, 2])
    owned.stepped(BRIDGE, 1, sending(7, 2))
    owned.stepped(BOT, 2, sending(8, 1))
    owned.revoked()
    assert owned.snapshot() == []
    owned.stepped(BRIDGE, 1, sending(7, 2))  # a late step between revocation and assignment
    assert owned.snapshot() == []
    owned.assigned([1])
    owned.stepped(BRIDGE, 1, sending(7, 2))
    owned.assigned([2])  # partition 1 moved away without a revocation seen here
    assert owned.snapshot() == []


def stats(partitions: dict[str, dict[str, int]]) -> dict[str, object]:
    return {"topics": {"matrix.events": {"partitions": partitions}}}


def test_router_lag_is_librdkafkas_consumer_lag_of_assigned_partitions() -> None:
    doc = stats(
        {
            "0": {"consumer_lag": 12, "ls_offset": 40, "committed_offset": 28},
            "1": {"consumer_lag": -1, "ls_offset": 5, "committed_offset": -1001},  # never committed
            "2": {"consumer_lag": -1, "ls_offset": -1001, "committed_offset": -1001},  # end unknown yet
            "3": {"consumer_lag": 4, "ls_offset": 9, "committed_offset": 5},  # not assigned here
            "-1": {"consumer_lag": -1},
        }
    )
    assert router_lag(doc, "matrix.events", [0, 1, 2]) == {0: 12, 1: 5}
    assert router_lag(doc, "other", [0]) == {}
    assert router_lag({}, "matrix.events", [0]) == {}


def test_group_lag_is_highwater_minus_committed() -> None:
    assert group_lag(40, 28) == 12
    assert group_lag(40, 40) == 0
    assert group_lag(0, None) == 0
    assert group_lag(5, None) == 5  # never committed: from offset 0
    assert group_lag(None, 3) is None
    assert group_lag(3, 5) == 0  # a stale highwater never gives a negative lag


def test_readiness_names_every_reason() -> None:
    assert readiness(router_started=True, router_alive=True, assigned=True, rebalancing=False) == []
    assert readiness(router_started=False, router_alive=False, assigned=False, rebalancing=True) == [
        "router not started",
        "no partition assignment",
        "rebalancing",
    ]
    assert readiness(router_started=True, router_alive=False, assigned=True, rebalancing=False) == [
        "router thread ended"
    ]
