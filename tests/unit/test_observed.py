"""What the worker exports about itself: outcome labels, appservice gauges, ownership, lag, readiness."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.machine import (
    AppserviceState,
    Input,
    Item,
    ItemKind,
    ItemsArrived,
    MachineConfig,
    Phase,
    PingSucceeded,
    Resume,
    RetryDue,
    SourcePosition,
    Txn,
    TxnFailed,
    TxnSucceeded,
    step,
)
from streams.matrix import AppserviceID, TxnID
from streams.observed import (
    FROM_START,
    Arrivals,
    OldestUnconsumed,
    OwnedAppservices,
    group_lag,
    readiness,
    router_committed,
    router_lag,
    undelivered,
    view,
)
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
    owned.stepped(BRIDGE, 1, sending(7, 2), 0)  # before any assignment: not owned for sure
    assert owned.snapshot() == []
    owned.assigned([1, 2])
    owned.stepped(BRIDGE, 1, sending(7, 2), 0)
    owned.stepped(BOT, 3, sending(8, 1), 0)  # a partition of another worker
    assert owned.snapshot() == [(BRIDGE, sending(7, 2), 0)]
    assert owned.owns(BRIDGE) and not owned.owns(BOT)


def test_the_latest_step_wins_and_gives_the_counts_of_the_txn_in_flight() -> None:
    owned = OwnedAppservices()
    owned.assigned([1])
    owned.stepped(BRIDGE, 1, sending(7, 2), 0)
    owned.stepped(BRIDGE, 1, sending(9, 100), 0)
    assert owned.snapshot() == [(BRIDGE, sending(9, 100), 0)]
    assert owned.inflight(BRIDGE, 9) == (100, 0, 0, 0)
    assert owned.inflight(BRIDGE, 7) is None  # no longer in flight
    assert owned.inflight(BOT, 9) is None


def test_a_revocation_drops_every_series_and_the_next_assignment_keeps_only_its_partitions() -> None:
    owned = OwnedAppservices()
    owned.assigned([1, 2])
    owned.stepped(BRIDGE, 1, sending(7, 2), 0)
    owned.stepped(BOT, 2, sending(8, 1), 0)
    owned.revoked()
    assert owned.snapshot() == []
    owned.stepped(BRIDGE, 1, sending(7, 2), 0)  # a late step between revocation and assignment
    assert owned.snapshot() == []
    owned.assigned([1])
    owned.stepped(BRIDGE, 1, sending(7, 2), 0)
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


class Owner:
    """The real machine stepped at given times, its states fed to an ``Arrivals`` as the deliverer does."""

    def __init__(self) -> None:
        self.state = AppserviceState()
        self.arrivals = Arrivals(self.state, 0)

    def at(self, now_ms: int, *inputs: Input) -> int | None:
        for input_ in inputs:
            self.state, _ = step(self.state, input_, now_ms, MachineConfig())
        return self.arrivals.update(self.state, now_ms)

    def txn(self) -> TxnID:
        assert self.state.inflight is not None
        return self.state.inflight.txn_id


def items(*offsets: int, kind: ItemKind = ItemKind.EVENT) -> ItemsArrived:
    return ItemsArrived(tuple(Item(kind, SourcePosition(0, o), b"{}") for o in offsets))


def test_the_oldest_undelivered_item_ages_until_delivered_then_the_next_oldest_counts() -> None:
    owner = Owner()
    assert owner.at(1_000) is None  # nothing undelivered
    assert owner.at(2_000, items(0)) == 2_000  # formed and in flight at once: undelivered still
    first = owner.txn()
    assert owner.at(3_000, items(*range(1, 31))) == 2_000  # parked behind it
    assert owner.at(4_000, TxnFailed(first, "HTTP 503")) == 2_000
    assert owner.at(5_000, items(31, kind=ItemKind.EPHEMERAL)) == 2_000
    assert owner.at(9_000, TxnSucceeded(first)) == 3_000  # event 0 delivered: the 30 parked at 3 s are oldest
    second = owner.txn()
    assert owner.at(9_500, TxnSucceeded(second)) is None  # 30 events and the ephemeral in one txn: all delivered
    assert view(owner.state, 10_000, None).oldest_s == 0


def test_a_partial_txn_leaves_the_rest_of_a_run_with_its_arrival_time() -> None:
    owner = Owner()
    owner.at(1_000, items(0))
    first = owner.txn()
    owner.at(2_000, items(*range(1, 151)))  # 150 parked
    owner.at(3_000, items(151))
    assert owner.at(4_000, TxnSucceeded(first)) == 2_000  # the next txn takes 100 of the 151: still in flight
    assert owner.at(5_000, TxnSucceeded(owner.txn())) == 2_000  # 50 of the run of 2 s remain
    assert owner.at(6_000, TxnSucceeded(owner.txn())) is None


def test_an_appservice_taken_over_counts_its_items_from_the_takeover() -> None:
    parked = AppserviceState(
        phase=Phase.BACKING_OFF,
        inflight=Txn(TxnID(1), (1, 0, 0, 0)),
        retry_at_ms=1,
        down_since_ms=1,
        queued=(40, 0, 0, 0),
    )
    owned = OwnedAppservices()
    owned.assigned([0])
    owned.stepped(BRIDGE, 0, parked, 50_000)
    assert owned.snapshot() == [(BRIDGE, parked, 50_000)]
    assert view(parked, 80_000, 50_000).oldest_s == 30.0


SMALL = MachineConfig(unit_ms=10, max_per_kind=(3, 2, 2, 1_000))
walk = st.lists(
    st.one_of(
        st.tuples(st.just("items"), st.lists(st.sampled_from(list(ItemKind)), min_size=1, max_size=5)),
        st.tuples(st.sampled_from(["ok", "fail", "due", "ping", "resume"]), st.just([])),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(walk, st.booleans())
def test_arrivals_match_a_per_item_record_of_what_is_undelivered(
    actions: list[tuple[str, list[ItemKind]]], replay: bool
) -> None:
    """Whatever the machine does, the oldest arrival is that of the oldest item not delivered, kind by kind."""
    state, now, offset = AppserviceState(), 0, 0
    arrivals = Arrivals(state, now)
    pending: dict[ItemKind, list[int]] = {kind: [] for kind in ItemKind}  # arrival times, per kind FIFO
    for action, kinds in actions:
        now += 1_500  # apart by more than MERGE_MS: every arrival keeps its own time
        inflight = state.inflight
        if action == "items":
            batch = []
            for kind in kinds:
                batch.append(Item(kind, SourcePosition(0, offset), b"{}"))
                pending[kind].append(now)
                offset += 1
            if replay and offset > len(kinds):  # an already applied item again: dropped by the machine
                batch.insert(0, Item(ItemKind.EVENT, SourcePosition(0, offset - len(kinds) - 1), b"{}"))
            event: Input = ItemsArrived(tuple(batch))
        elif inflight is None:
            continue
        elif action == "ok":
            event = TxnSucceeded(inflight.txn_id)
        elif action == "fail":
            event = TxnFailed(inflight.txn_id, "HTTP 500")
        elif action == "due":
            event = RetryDue(inflight.txn_id)
            now = max(now, state.retry_at_ms or 0)
        elif action == "ping":
            event = PingSucceeded()
        else:
            event = Resume()
        state, _ = step(state, event, now, SMALL)
        if action == "ok" and inflight is not None:
            for kind in ItemKind:
                del pending[kind][: inflight.counts[kind]]
        oldest = arrivals.update(state, now)
        heads = [times[0] for times in pending.values() if times]
        assert oldest == (min(heads) if heads else None)
        assert [len(times) for times in pending.values()] == list(view(state, now).backlog)


def test_a_day_long_outage_keeps_a_bounded_number_of_runs_and_ages_within_a_percent() -> None:
    owner = Owner()
    owner.at(0, items(0))
    owner.at(1, TxnFailed(owner.txn(), "HTTP 503"))
    arrived_at = {0: 0}
    offset, day_ms = 1, 86_400_000
    for now in range(10, day_ms, 250):  # 4 steps per second for a day, one event each
        owner.at(now, items(offset))
        arrived_at[offset] = now
        offset += 1
    assert len(owner.arrivals._runs[ItemKind.EVENT]) < 2_000  # not one per step: 345,600
    # Back up: deliver until what is left arrived in the last hour.
    delivered, now = 0, day_ms
    while owner.state.inflight is not None and arrived_at[delivered] < day_ms - 3_600_000:
        delivered += owner.state.inflight.counts[ItemKind.EVENT]
        oldest = owner.at(now, TxnSucceeded(owner.txn()))
    assert oldest is not None
    true_age, age = now - arrived_at[delivered], now - oldest
    assert true_age <= age <= true_age + max(1000, true_age // 100)


def test_router_committed_is_where_the_router_resumes_or_the_log_start() -> None:
    doc = stats({"0": {"committed_offset": 28}, "1": {"committed_offset": -1001}, "3": {"committed_offset": 5}})
    assert router_committed(doc, "matrix.events", [0, 1, 2]) == {0: 28, 1: FROM_START}


def test_oldest_unconsumed_wants_partitions_behind_most_records_first_and_bounded() -> None:
    oldest = OldestUnconsumed()
    behind = {("in", 0): (0, 10), ("in", 1): (5, 20), ("in", 2): (50, FROM_START), ("in", 3): (7, 3)}
    assert oldest.wanted("g", behind) == [("in", 2, FROM_START), ("in", 3, 3), ("in", 1, 20)]
    assert oldest.wanted("g", behind, limit=1) == [("in", 2, FROM_START)]


def test_a_partition_read_is_not_read_again_until_its_committed_offset_moves() -> None:
    oldest = OldestUnconsumed()
    oldest.found("g", "in", 1, 20, 1_000)
    assert oldest.wanted("g", {("in", 1): (5, 20)}) == []
    assert oldest.wanted("g", {("in", 1): (3, 22)}) == [("in", 1, 22)]
    # Until then its age is that of the record read last: an upper bound.
    assert oldest.age_s("g", "in", 1, 3, now_ms=4_000) == 3.0


def test_the_lag_in_seconds_is_the_age_of_the_record_read_and_0_when_caught_up() -> None:
    oldest = OldestUnconsumed()
    assert oldest.age_s("g", "in", 1, 5, now_ms=10_000) is None  # behind, not read yet: no figure
    oldest.found("g", "in", 1, 20, 2_500)
    assert oldest.age_s("g", "in", 1, 5, now_ms=10_000) == 7.5
    assert oldest.age_s("g", "in", 1, 0, now_ms=10_000) == 0.0
    assert oldest.age_s("g", "in", 1, 5, now_ms=1_000) == 0.0  # a producer clock ahead of ours: never negative


def test_a_partition_caught_up_or_gone_is_forgotten_and_read_again_when_behind() -> None:
    oldest = OldestUnconsumed()
    oldest.found("g", "in", 1, 20, 1_000)
    oldest.found("g", "in", 2, 30, 1_000)
    oldest.found("other", "in", 1, 20, 1_000)
    assert oldest.wanted("g", {("in", 1): (0, 25)}) == []  # caught up; partition 2 no longer reported
    assert oldest.age_s("g", "in", 2, 4, now_ms=2_000) is None
    assert oldest.wanted("g", {("in", 1): (4, 20)}) == [("in", 1, 20)]  # behind again at the same offset
    assert oldest.age_s("other", "in", 1, 4, now_ms=2_000) == 1.0  # another group's readings stay


def test_forget_drops_the_readings_of_partitions_no_longer_consumed_here() -> None:
    oldest = OldestUnconsumed()
    oldest.found("g", "in", 1, 20, 1_000)
    oldest.found("g", "in", 2, 20, 1_000)
    oldest.found("g", "other", 1, 20, 1_000)
    oldest.forget("g", "in", keep=[2])
    assert oldest.age_s("g", "in", 1, 4, now_ms=2_000) is None
    assert oldest.age_s("g", "in", 2, 4, now_ms=2_000) == 1.0
    assert oldest.age_s("g", "other", 1, 4, now_ms=2_000) == 1.0
