"""The policy for a transaction the appservice refuses as too large (413): slices, then a dead letter."""

from __future__ import annotations

from dataclasses import replace

import orjson

from streams.backlog import BacklogCursor
from streams.codec import StoredAppservice, decode_appservice, encode_appservice
from streams.machine import (
    AppserviceState,
    CameUp,
    DeadLetterTxn,
    ForgetTxn,
    FormSlice,
    FormTxn,
    Item,
    ItemKind,
    ItemsArrived,
    MachineConfig,
    Phase,
    Resume,
    SendTxn,
    SourcePosition,
    Split,
    Txn,
    TxnDeadLettered,
    TxnFailed,
    TxnSucceeded,
    TxnTooLarge,
    step,
)
from streams.matrix import TxnID
from streams.outcome import HttpError, as_input
from streams.records import decode_inbox, encode_outcome
from streams.transaction import build_body, slice_body

CONFIG = MachineConfig(unit_ms=1000)
NOW = 1_700_000_000_000


def run(state: AppserviceState, *inputs: object) -> tuple[AppserviceState, list[object]]:
    out: list[object] = []
    for event in inputs:
        state, commands = step(state, event, NOW, CONFIG)  # type: ignore[arg-type]
        out.extend(commands)
    return state, out


def sending(*counts: int) -> AppserviceState:
    """An appservice with one txn in flight holding ``counts`` items per kind."""
    txn = Txn(TxnID(NOW * 1000), (counts[0], counts[1], counts[2], counts[3]))
    return AppserviceState(phase=Phase.SENDING, inflight=txn, last_txn_id=txn.txn_id)


def slices(out: list[object]) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
    return [(c.start, c.txn.counts) for c in out if isinstance(c, FormSlice)]


def test_413_is_its_own_input_and_survives_the_inbox() -> None:
    refused = as_input(HttpError(413, "M_TOO_LARGE"), TxnID(9), jitter=0.0)
    assert refused == TxnTooLarge(TxnID(9), "HTTP 413 M_TOO_LARGE")
    assert decode_inbox(encode_outcome(refused)) == refused
    assert decode_inbox(encode_outcome(TxnDeadLettered(TxnID(9)))) == TxnDeadLettered(TxnID(9))
    assert isinstance(as_input(HttpError(400), TxnID(9), jitter=0.0), TxnFailed)  # other 4xx: retried


def test_a_refused_txn_goes_in_halves_with_fresh_ids_and_is_never_sent_again() -> None:
    state = sending(100, 10, 0, 0)
    source = state.inflight.txn_id  # type: ignore[union-attr]
    state, out = run(state, TxnTooLarge(source, "HTTP 413"))
    assert slices(out) == [((0, 0, 0, 0), (50, 5, 0, 0))]
    first = state.inflight.txn_id  # type: ignore[union-attr]
    assert first > source and SendTxn(first, 0) in out and ForgetTxn(source) not in out
    assert state.phase is Phase.SENDING and state.split == Split(source, (100, 10, 0, 0), (0,) * 4, (50, 5, 0, 0))
    state, out = run(state, TxnSucceeded(first))
    assert slices(out) == [((50, 5, 0, 0), (50, 5, 0, 0))]
    assert ForgetTxn(first) in out and state.inflight.txn_id > first  # type: ignore[union-attr]
    state, out = run(state, TxnSucceeded(state.inflight.txn_id))  # type: ignore[union-attr]
    assert ForgetTxn(source) in out  # the refused body goes once its last slice is out
    assert state.phase is Phase.IDLE and state.split is None


def test_a_refused_slice_is_halved_again_from_where_it_began() -> None:
    state = sending(8, 0, 0, 0)
    source = state.inflight.txn_id  # type: ignore[union-attr]
    state, out = run(state, TxnTooLarge(source, "HTTP 413"))
    state, out = run(state, TxnTooLarge(state.inflight.txn_id, "HTTP 413"))  # type: ignore[union-attr]
    assert slices(out) == [((0, 0, 0, 0), (2, 0, 0, 0))]
    assert any(isinstance(c, ForgetTxn) and c.txn_id != source for c in out)  # the refused slice's own body
    sizes = []
    while state.split is not None:
        state, out = run(state, TxnSucceeded(state.inflight.txn_id))  # type: ignore[union-attr]
        sizes += [counts for _, counts in slices(out)]
    assert sizes == [(2, 0, 0, 0)] * 3


def test_after_a_dead_letter_the_rest_goes_in_halves_again_not_one_item_per_txn() -> None:
    state = sending(100, 0, 0, 0)
    sent: list[tuple[str, int, int]] = []  # (answer, first item, items) per txn
    while state.inflight is not None:
        txn, split = state.inflight, state.split
        first = split.done[0] if split is not None else 0
        if split is not None and split.dead_lettering:
            answer, state, _ = "dead-lettered", *run(state, TxnDeadLettered(txn.txn_id))
        elif first <= 37 < first + txn.counts[0]:  # item 37 is refused in any txn that holds it
            answer, state, _ = "413", *run(state, TxnTooLarge(txn.txn_id, "HTTP 413"))
        else:
            answer, state, _ = "200", *run(state, TxnSucceeded(txn.txn_id))
        sent.append((answer, first, txn.counts[0]))
    assert state.phase is Phase.IDLE and state.split is None
    assert sent[sent.index(("dead-lettered", 37, 1)) + 1 :] == [("200", 38, 50), ("200", 88, 12)]
    assert len(sent) == 15, "not 75: the 62 items after item 37 had gone one per txn"


def test_the_device_summary_goes_whole_with_the_first_half() -> None:
    state = sending(3, 0, 0, 5)
    state, out = run(state, TxnTooLarge(state.inflight.txn_id, "HTTP 413"))  # type: ignore[union-attr]
    assert slices(out) == [((0, 0, 0, 0), (2, 0, 0, 5))]
    state, out = run(state, TxnSucceeded(state.inflight.txn_id))  # type: ignore[union-attr]
    assert slices(out) == [((2, 0, 0, 5), (1, 0, 0, 0))]


def test_one_item_still_refused_is_dead_lettered_and_delivery_goes_on() -> None:
    state = sending(1, 0, 0, 0)
    source = state.inflight.txn_id  # type: ignore[union-attr]
    state, _ = run(state, ItemsArrived((Item(ItemKind.EVENT, SourcePosition(0, 5), b"{}"),)))
    state, out = run(state, TxnTooLarge(source, "HTTP 413"))
    assert [c for c in out if isinstance(c, (DeadLetterTxn, SendTxn, FormSlice))] == [
        DeadLetterTxn(source, f"txn {source} of one item refused as too large: HTTP 413")
    ]
    state, out = run(state, Resume())  # after a restart, before Kafka took it: written again, never sent
    assert [type(c) for c in out] == [DeadLetterTxn]
    state, out = run(state, TxnDeadLettered(source))
    assert ForgetTxn(source) in out and [c.txn.counts for c in out if isinstance(c, FormTxn)] == [(1, 0, 0, 0)]
    assert state.split is None and state.phase is Phase.SENDING


def test_a_413_while_down_brings_the_appservice_up_it_answered() -> None:
    state = sending(2, 0, 0, 0)
    txn_id = state.inflight.txn_id  # type: ignore[union-attr]
    state, _ = run(state, TxnFailed(txn_id, "HTTP 503"))
    assert state.phase.is_down
    state = replace(state, phase=Phase.RETRYING)  # its retry is on the wire
    state, out = run(state, TxnTooLarge(txn_id, "HTTP 413"))
    assert any(isinstance(c, CameUp) for c in out)
    assert state.phase is Phase.SENDING and state.down_since_ms is None and state.attempt == 0


def test_a_split_state_round_trips_through_the_codec() -> None:
    state, _ = run(sending(10, 2, 0, 1), TxnTooLarge(TxnID(NOW * 1000), "HTTP 413"))
    stored = StoredAppservice(state, BacklogCursor())
    assert decode_appservice(encode_appservice(stored)) == stored


def test_a_slice_is_the_body_build_body_makes_of_its_items() -> None:
    events = [orjson.dumps({"event_id": f"$e{n}", "content": {"body": "é" * n, "n": 1.5}}) for n in range(5)]
    ephemeral = [orjson.dumps({"type": "m.typing", "n": n}) for n in range(3)]
    to_device = [orjson.dumps({"type": "m.x", "n": n}) for n in range(2)]
    device = [orjson.dumps({"user": "@a:hs", "lists": "changed"})]
    body = build_body(events, ephemeral, to_device, device, ephemeral_stable=True, ephemeral_unstable=True)
    first = slice_body(body, (0, 0, 0, 0), (3, 2, 1, 1))
    assert first == build_body(
        events[:3], ephemeral[:2], to_device[:1], device, ephemeral_stable=True, ephemeral_unstable=True
    )
    second = slice_body(body, (3, 2, 1, 1), (2, 1, 1, 0))
    assert second == build_body(
        events[3:], ephemeral[2:], to_device[1:], ephemeral_stable=True, ephemeral_unstable=True
    )
