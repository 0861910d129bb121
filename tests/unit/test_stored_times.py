"""Arrival times in stored state and backlog chunks, and the previous release's bytes still read.

The literals below were captured from the encoders before arrival times were
kept (commit eb17648): a store written by that release must keep working.
"""

from __future__ import annotations

import orjson

from streams.backlog import Backlog, BacklogCursor, Chunk, KindCursor, chunk_key, decode_chunk
from streams.codec import StoredTxn, TxnHead, decode_appservice, decode_txn, decode_txn_head
from streams.delivery import run_step, state_key
from streams.machine import (
    AppserviceState,
    Item,
    ItemKind,
    ItemsArrived,
    MachineConfig,
    Phase,
    Resume,
    SourcePosition,
    Txn,
    TxnSucceeded,
)
from streams.matrix import AppserviceID, TxnID

NOW = 1_764_650_100_000
AS = AppserviceID("bridge")

# ------------------------------------------------ the previous release's bytes

V1_STATE = (
    b'\x01["backing_off",[1764650000000000,[100,2,0,1]],3,1764650009000,1764650001000,1764650000000000,'
    b"[250,0,1,0],[[0,4711],[2,99]],[[3,40,5],[0,0,0],[7,0,8],[2,0,2]]]"
)
V2_STATE = (
    b'\x02\x00\x00\x00z["sending",[1764650000000001,[1,0,0,0]],0,null,null,1764650000000001,[2,0,0,0],'
    b'[[1,12]],[[0,0,1],[0,0,0],[0,0,0],[0,0,0]]]{"events":[{"type":"m.room.message"}]}'
)
V1_CHUNK = b'\x01\x00\x00\x00\x07{"a":1}\x00\x00\x00\x07{"b":2}'
V1_TXN = b'\x01\x00\x06D\xf0\x98g$\x02{"events":[]}'
V2_TXN_HEAD = b'\x02\x00\x06D\xf0\x98g$\x03\x00\x00\x00\x04{"ev'
V2_TXN_PART = b"\x01\x00\x06D\xf0\x98g$\x03ents"


def test_a_version_1_state_decodes_with_its_times_not_known() -> None:
    stored = decode_appservice(V1_STATE)
    assert stored.machine == AppserviceState(
        phase=Phase.BACKING_OFF,
        inflight=Txn(TxnID(1764650000000000), (100, 2, 0, 1)),
        attempt=3,
        retry_at_ms=1764650009000,
        down_since_ms=1764650001000,
        last_txn_id=1764650000000000,
        queued=(250, 0, 1, 0),
        applied=((0, 4711), (2, 99)),
    )
    assert stored.cursor == BacklogCursor(
        (KindCursor(3, 40, 5), KindCursor(), KindCursor(7, 0, 8), KindCursor(2, 0, 2))
    )
    assert (stored.inline_body, stored.inflight_since_ms, stored.oldest_ms) == (None, None, None)


def test_a_version_2_state_decodes_with_its_inline_body_and_its_times_not_known() -> None:
    stored = decode_appservice(V2_STATE)
    assert stored.machine.inflight == Txn(TxnID(1764650000000001), (1, 0, 0, 0))
    assert stored.machine.queued == (2, 0, 0, 0)
    assert stored.cursor.kinds[0] == KindCursor(0, 0, 1, None)
    assert stored.inline_body == b'{"events":[{"type":"m.room.message"}]}'
    assert stored.inflight_since_ms is None


def test_a_version_1_chunk_decodes_without_a_time() -> None:
    assert decode_chunk(V1_CHUNK) == Chunk(None, [b'{"a":1}', b'{"b":2}'])


def test_the_previous_releases_transactions_still_decode_whole_and_split() -> None:
    assert decode_txn_head(V1_TXN) == TxnHead(TxnID(1764650000000002), 1, b'{"events":[]}')
    assert decode_txn_head(V2_TXN_HEAD) == TxnHead(TxnID(1764650000000003), 4, b'{"ev')
    assert decode_txn(V2_TXN_PART) == StoredTxn(TxnID(1764650000000003), b"ents")


def test_a_store_of_the_previous_release_counts_its_items_from_the_first_step_then_keeps_that_time() -> None:
    store: dict[bytes, bytes] = {
        state_key(AS): V2_STATE,
        b"b\x00" + chunk_key(AS, ItemKind.EVENT, 0): b'\x01\x00\x00\x00\x07{"a":1}\x00\x00\x00\x07{"b":2}',
    }
    kv = DictStore(store)
    [resent] = run_step(AS, [Resume()], kv, now_ms=NOW, config=MachineConfig()).sends
    assert resent.body == b'{"events":[{"type":"m.room.message"}]}'
    later = run_step(AS, [Resume()], kv, now_ms=NOW + 60_000, config=MachineConfig())
    assert later.oldest_ms == NOW  # stored at the first step, not counted again from each
    done = run_step(AS, [TxnSucceeded(resent.txn_id)], kv, now_ms=NOW + 61_000, config=MachineConfig())
    assert orjson.loads(done.sends[0].body) == {"events": [{"a": 1}, {"b": 2}]}
    assert done.oldest_ms == NOW  # the old chunk's items too, from when the first step read the state


class DictStore:
    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = data

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)


# ------------------------------------------------------ times in the backlog


def test_each_chunk_keeps_its_earliest_arrival_and_the_cursor_repeats_the_head_chunks() -> None:
    store = DictStore({})
    backlog = Backlog("as", BacklogCursor(), store, NOW)
    backlog.append(ItemKind.EVENT, [b"1", b"2"], 500)
    backlog.append(ItemKind.EVENT, [b"3"], 400)
    cursor = backlog.flush()
    assert cursor.kinds[ItemKind.EVENT] == KindCursor(0, 0, 1, 400)
    backlog = Backlog("as", cursor, store, NOW)
    backlog.append(ItemKind.EVENT, [b"4"], 900)
    cursor = backlog.flush()
    assert cursor.kinds[ItemKind.EVENT].head_ms == 400  # the head chunk's, not the newest
    assert decode_chunk(store.data[chunk_key("as", ItemKind.EVENT, 1)]).arrived_ms == 900


def test_a_partly_taken_chunk_keeps_its_time_and_a_take_to_its_end_reads_the_next_ones() -> None:
    store = DictStore({})
    backlog = Backlog("as", BacklogCursor(), store, NOW)
    backlog.append(ItemKind.EVENT, [b"1", b"2", b"3"], 100)
    cursor = backlog.flush()
    backlog = Backlog("as", cursor, store, NOW)
    backlog.append(ItemKind.EVENT, [b"4"], 200)
    cursor = backlog.flush()
    backlog = Backlog("as", cursor, store, NOW)
    assert backlog.take(ItemKind.EVENT, 2) == ([b"1", b"2"], 100)
    assert backlog.flush().kinds[ItemKind.EVENT].head_ms == 100
    assert backlog.take(ItemKind.EVENT, 1) == ([b"3"], 100)
    assert backlog.flush().kinds[ItemKind.EVENT] == KindCursor(1, 0, 2, 200)  # read from chunk 1 alone
    assert backlog.take(ItemKind.EVENT, 1) == ([b"4"], 200)
    assert backlog.flush().kinds[ItemKind.EVENT] == KindCursor(2, 0, 2, None)


def test_items_taken_across_chunks_and_this_steps_runs_give_the_earliest_of_them() -> None:
    store = DictStore({})
    backlog = Backlog("as", BacklogCursor(), store, NOW)
    backlog.append(ItemKind.EVENT, [b"1"], 300)
    backlog = Backlog("as", backlog.flush(), store, NOW)
    backlog.append(ItemKind.EVENT, [b"2"], 100)
    backlog.append(ItemKind.EVENT, [b"3", b"4"], 700)
    assert backlog.take(ItemKind.EVENT, 3) == ([b"1", b"2", b"3"], 100)
    cursor = backlog.flush()
    assert cursor.kinds[ItemKind.EVENT].head_ms == 700  # only the run of 3 and 4 is left: 4 is written
    assert Backlog("as", cursor, store, NOW).take(ItemKind.EVENT, 1) == ([b"4"], 700)


def test_a_cursor_of_the_previous_release_counts_its_chunks_from_now() -> None:
    store = DictStore({chunk_key("as", ItemKind.EVENT, 0): V1_CHUNK})
    backlog = Backlog("as", BacklogCursor((KindCursor(0, 0, 1),) + (KindCursor(),) * 3), store, NOW)
    assert backlog.flush().kinds[ItemKind.EVENT].head_ms == NOW
    assert backlog.take(ItemKind.EVENT, 2) == ([b'{"a":1}', b'{"b":2}'], NOW)


def test_items_of_one_step_with_the_same_time_form_a_txn_that_carries_it() -> None:
    store = DictStore({})
    items = tuple(Item(ItemKind.EVENT, SourcePosition(0, o), b"{}", NOW - 5_000) for o in range(3))
    result = run_step(AS, [ItemsArrived(items)], store, now_ms=NOW, config=MachineConfig())
    stored = decode_appservice(store.data[state_key(AS)])
    assert (stored.inflight_since_ms, stored.cursor.kinds[ItemKind.EVENT].head_ms) == (NOW - 5_000, NOW - 5_000)
    assert result.oldest_ms == NOW - 5_000
