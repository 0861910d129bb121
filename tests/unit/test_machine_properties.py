"""Random walks through the machine: its guarantees hold for any input order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.machine import (
    AppserviceState,
    Enqueue,
    ForgetTxn,
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
    TxnFailed,
    TxnSucceeded,
    step,
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
