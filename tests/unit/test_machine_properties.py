"""Random walks through the machine: its guarantees hold for any input order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.machine import (
    AppserviceState,
    DeadLetterTxn,
    Enqueue,
    ForgetTxn,
    FormSlice,
    FormTxn,
    Input,
    Item,
    ItemKind,
    ItemsArrived,
    MachineConfig,
    PingSucceeded,
    Resume,
    RetryDue,
    SendTxn,
    SourcePosition,
    TxnDeadLettered,
    TxnFailed,
    TxnSucceeded,
    TxnTooLarge,
    counts,
    step,
    units,
)
from streams.matrix import TxnID

CONFIG = MachineConfig(unit_ms=10, max_per_kind=(3, 2, 2, 1_000))

# An action: what happens next; outcomes refer to the txn in flight or a stale one.
actions = st.one_of(
    st.tuples(st.just("items"), st.lists(st.sampled_from(list(ItemKind)), min_size=1, max_size=5), st.booleans()),
    st.tuples(st.sampled_from(["ok", "fail", "due", "stale_ok", "resume", "ping"]), st.just([]), st.booleans()),
    st.tuples(st.just("tick"), st.just([]), st.booleans()),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(actions, max_size=60))
def test_guarantees_hold_for_any_sequence(walk: list[tuple[str, list[ItemKind], bool]]) -> None:
    state = AppserviceState()
    now = 1_000_000
    offset = 0
    accepted: list[list[bytes]] = [[], [], [], []]  # per kind, in arrival order
    delivered: list[list[bytes]] = [[], [], [], []]
    queue: list[list[bytes]] = [[], [], [], []]  # a model of the backlog
    stored: dict[int, list[list[bytes]]] = {}
    txn_ids: list[int] = []
    for name, kinds, replay in walk:
        event: Input
        if name == "items":
            batch = []
            last_seen = offset
            for kind in kinds:
                offset += 1
                batch.append(Item(kind, SourcePosition(0, offset), b"%d" % offset))
            if replay and last_seen > 0:  # a replay of an already-seen position must be dropped
                batch = [Item(ItemKind.EVENT, SourcePosition(0, last_seen), b"dup"), *batch]
            event = ItemsArrived(tuple(batch))
            for item in batch:
                if item.payload != b"dup":
                    accepted[item.kind].append(item.payload)
        elif name == "tick":
            now += 5_000
            continue
        else:
            current = state.inflight.txn_id if state.inflight else TxnID(7)
            event = {
                "ok": TxnSucceeded(current),
                "fail": TxnFailed(current, "x"),
                "due": RetryDue(current),
                "stale_ok": TxnSucceeded(TxnID(3)),
                "resume": Resume(),
                "ping": PingSucceeded(),
            }[name]
        before = state
        state, commands = step(state, event, now, CONFIG)
        for c in commands:
            if isinstance(c, Enqueue):
                queue[c.kind].extend(c.payloads)
            elif isinstance(c, FormTxn):
                assert not txn_ids or c.txn.txn_id > txn_ids[-1], "txn ids strictly increase"
                txn_ids.append(c.txn.txn_id)
                body = []
                for kind in ItemKind:
                    n = c.txn.counts[kind]
                    assert n <= CONFIG.max_per_kind[kind]
                    body.append(queue[kind][:n])
                    del queue[kind][:n]
                stored[c.txn.txn_id] = body
            elif isinstance(c, SendTxn):
                assert state.inflight is not None and c.txn_id == state.inflight.txn_id, (
                    "only the txn in flight is sent"
                )
            elif isinstance(c, ForgetTxn):
                assert before.inflight is not None and c.txn_id == before.inflight.txn_id
                body = stored.pop(c.txn_id)
                for kind in ItemKind:
                    delivered[kind].extend(body[kind])
        assert len(stored) == (0 if state.inflight is None else 1), "at most one txn in flight"
        assert list(state.queued) == [len(q) for q in queue], "machine counts match the backlog"
    for kind in ItemKind:
        in_flight = stored[state.inflight.txn_id][kind] if state.inflight else []
        assert delivered[kind] + in_flight + queue[kind] == accepted[kind], "nothing lost, nothing reordered"


refusals = st.one_of(
    actions,
    st.tuples(st.sampled_from(["too_large", "too_large", "dead_lettered"]), st.just([]), st.booleans()),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(refusals, max_size=80))
def test_refused_txns_are_delivered_in_slices_or_dead_lettered_one_item_at_a_time(
    walk: list[tuple[str, list[ItemKind], bool]],
) -> None:
    """With 413s anywhere: every item is delivered or dead-lettered once, in order per kind; ids increase."""
    state = AppserviceState()
    now = 1_000_000
    offset = 0
    accepted: list[list[bytes]] = [[], [], [], []]
    out: list[list[bytes]] = [[], [], [], []]  # delivered or dead-lettered, in that order
    dead: list[list[list[bytes]]] = []
    queue: list[list[bytes]] = [[], [], [], []]
    stored: dict[int, list[list[bytes]]] = {}
    txn_ids: list[int] = []
    for name, kinds, _ in walk:
        event: Input
        if name == "items":
            batch = []
            for kind in kinds:
                offset += 1
                batch.append(Item(kind, SourcePosition(0, offset), b"%d" % offset))
                accepted[kind].append(b"%d" % offset)
            event = ItemsArrived(tuple(batch))
        elif name == "tick":
            now += 5_000
            continue
        else:
            current = state.inflight.txn_id if state.inflight else TxnID(7)
            event = {
                "ok": TxnSucceeded(current),
                "fail": TxnFailed(current, "x"),
                "due": RetryDue(current),
                "stale_ok": TxnSucceeded(TxnID(3)),
                "resume": Resume(),
                "ping": PingSucceeded(),
                "too_large": TxnTooLarge(current, "HTTP 413"),
                "dead_lettered": TxnDeadLettered(current),
            }[name]
        before = state
        state, commands = step(state, event, now, CONFIG)
        dying = isinstance(event, TxnDeadLettered) and before.split is not None and before.split.dead_lettering
        if (
            before.inflight is not None
            and before.inflight != state.inflight
            and (isinstance(event, TxnSucceeded) or dying)
        ):
            body = stored[before.inflight.txn_id]
            if isinstance(event, TxnDeadLettered):
                dead.append(body)
            for kind in ItemKind:
                out[kind].extend(body[kind])
        for c in commands:
            if isinstance(c, Enqueue):
                queue[c.kind].extend(c.payloads)
            elif isinstance(c, (FormTxn, FormSlice)):
                assert not txn_ids or c.txn.txn_id > txn_ids[-1], "txn ids strictly increase"
                txn_ids.append(c.txn.txn_id)
                body = []
                for kind in ItemKind:
                    n = c.txn.counts[kind]
                    if isinstance(c, FormTxn):
                        body.append(queue[kind][:n])
                        del queue[kind][:n]
                    else:
                        source = stored[c.source][kind]
                        body.append(source[c.start[kind] : c.start[kind] + n])
                        assert kind is not ItemKind.DEVICE or n in (0, len(source)), "the device summary goes whole"
                stored[c.txn.txn_id] = body
            elif isinstance(c, (SendTxn, DeadLetterTxn)):
                assert state.inflight is not None and c.txn_id == state.inflight.txn_id
            elif isinstance(c, ForgetTxn):
                stored.pop(c.txn_id)
        expected = {state.inflight.txn_id} if state.inflight else set()
        assert set(stored) == expected | ({state.split.source} if state.split else set()), "only what is in transit"
    assert all(units(counts([len(kind) for kind in body])) == 1 for body in dead), "only single items die"
    for kind in ItemKind:
        if state.split is not None:
            in_transit = stored[state.split.source][kind][state.split.done[kind] :]
        else:
            in_transit = stored[state.inflight.txn_id][kind] if state.inflight else []
        assert out[kind] + in_transit + queue[kind] == accepted[kind], "nothing lost, nothing reordered"
