"""Stored bytes: backlog chunks, appservice state and transactions, plus one delivery step."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest

from streams.backlog import (
    MAX_CHUNK_BYTES,
    Backlog,
    BacklogCursor,
    Chunk,
    KindCursor,
    chunk_arrived_ms,
    chunk_key,
    decode_chunk,
    encode_chunk,
)
from streams.codec import (
    MAX_TXN_PART_BYTES,
    StoredAppservice,
    StoredTxn,
    TxnHead,
    decode_appservice,
    decode_txn,
    decode_txn_head,
    encode_appservice,
    encode_txn,
    encode_txn_parts,
)
from streams.delivery import INLINE_BODY_MAX, BodyFormat, run_step, state_key, txn_key
from streams.errors import InvariantBroken
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
    TxnFailed,
    TxnSucceeded,
)
from streams.matrix import AppserviceID, TxnID
from streams.transaction import build_body


class DictStore:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.writes = 0

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.writes += 1
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)


NOW = 1_764_650_000_000


def test_chunk_golden_bytes() -> None:
    raw = encode_chunk([b"{}", b"[1]"], 258)
    assert raw == b"\x02\x00\x00\x00\x00\x00\x00\x01\x02\x00\x00\x00\x02{}\x00\x00\x00\x03[1]"


def test_chunk_round_trip() -> None:
    assert decode_chunk(encode_chunk([b"a", b"", b"ccc"], NOW)) == Chunk(NOW, [b"a", b"", b"ccc"])
    assert chunk_arrived_ms(encode_chunk([b"a"], NOW)) == NOW


@pytest.mark.parametrize("raw", [b"", b"\x03", b"\x02\x00\x00", b"\x01\x00\x00\x00\x05ab"])
def test_bad_chunks_raise(raw: bytes) -> None:
    with pytest.raises(InvariantBroken):
        decode_chunk(raw)


def test_chunk_keys_sort_numerically() -> None:
    keys = [chunk_key("as", ItemKind.EVENT, n) for n in (2, 256, 1, 65536)]
    assert sorted(keys) == [chunk_key("as", ItemKind.EVENT, n) for n in (1, 2, 256, 65536)]


def test_appservice_state_round_trip() -> None:
    stored = StoredAppservice(
        AppserviceState(
            phase=Phase.BACKING_OFF,
            inflight=Txn(TxnID(123), (1, 2, 3, 4)),
            attempt=2,
            retry_at_ms=99,
            down_since_ms=50,
            last_txn_id=123,
            queued=(4, 5, 6, 7),
            applied=((0, 10), (3, 7)),
        ),
        BacklogCursor((KindCursor(1, 2, 3, 40), KindCursor(), KindCursor(0, 0, 9, 41), KindCursor(4, 0, 5, 42))),
        inflight_since_ms=39,
    )
    assert decode_appservice(encode_appservice(stored)) == stored


def test_appservice_state_golden_bytes() -> None:
    raw = encode_appservice(StoredAppservice(AppserviceState(), BacklogCursor()))
    json = b'["idle",null,0,null,null,0,[0,0,0,0],[],[[0,0,0,null],[0,0,0,null],[0,0,0,null],[0,0,0,null]],null]'
    assert raw == b"\x03" + len(json).to_bytes(4, "big") + json


def test_appservice_state_with_times_and_an_inline_body_golden_bytes_and_round_trip() -> None:
    machine = AppserviceState(
        phase=Phase.SENDING, inflight=Txn(TxnID(7), (1, 0, 0, 0)), last_txn_id=7, queued=(2, 0, 0, 0)
    )
    cursor = BacklogCursor((KindCursor(0, 0, 1, 1500), KindCursor(), KindCursor(), KindCursor()))
    stored = StoredAppservice(machine, cursor, b'{"events":[{}]}', 1400)
    raw = encode_appservice(stored)
    json = (
        b'["sending",[7,[1,0,0,0]],0,null,null,7,[2,0,0,0],[],'
        b"[[0,0,1,1500],[0,0,0,null],[0,0,0,null],[0,0,0,null]],1400]"
    )
    assert raw == b"\x03" + len(json).to_bytes(4, "big") + json + b'{"events":[{}]}'
    assert decode_appservice(raw) == stored
    assert stored.oldest_ms == 1400


def test_the_oldest_arrival_is_the_earliest_of_the_txn_in_flight_and_each_kinds_head_chunk() -> None:
    machine = AppserviceState(phase=Phase.SENDING, inflight=Txn(TxnID(7), (1, 0, 0, 0)), queued=(2, 0, 3, 0))
    cursor = BacklogCursor((KindCursor(0, 0, 1, 1500), KindCursor(), KindCursor(4, 1, 6, 1200), KindCursor()))
    assert StoredAppservice(machine, cursor, inflight_since_ms=1400).oldest_ms == 1200
    assert StoredAppservice(AppserviceState(), BacklogCursor()).oldest_ms is None


@pytest.mark.parametrize(
    "raw",
    [
        b"\x02\x00\x00",  # no room for the JSON length
        b"\x02\x00\x00\x00\xff[]",  # JSON shorter than its length
        b"\x02\x00\x00\x00\x4a" + b'["idle",null,0,null,null,0,[0,0,0,0],[],[[0,0,0],[0,0,0],[0,0,0],[0,0,0]]]body',
        b"\x03\x00\x00\x00\x02{}",  # not a list
        b"\x04[]",
    ],
    ids=["truncated-length", "truncated-json", "inline-body-without-a-txn-in-flight", "v3-not-a-list", "v4"],
)
def test_bad_states_raise(raw: bytes) -> None:
    with pytest.raises(InvariantBroken):
        decode_appservice(raw)


def test_an_empty_inline_body_is_refused_since_it_would_read_as_none() -> None:
    machine = AppserviceState(phase=Phase.SENDING, inflight=Txn(TxnID(7), (1, 0, 0, 0)), last_txn_id=7)
    with pytest.raises(InvariantBroken):
        encode_appservice(StoredAppservice(machine, BacklogCursor(), b""))


def test_txn_golden_bytes_and_round_trip() -> None:
    raw = encode_txn(StoredTxn(TxnID(258), b'{"events":[]}'))
    assert raw == b'\x01\x00\x00\x00\x00\x00\x00\x01\x02{"events":[]}'
    assert decode_txn(raw) == StoredTxn(TxnID(258), b'{"events":[]}')


def test_a_body_over_the_part_size_is_split_golden_bytes() -> None:
    body = b"a" * MAX_TXN_PART_BYTES + b"bc"
    head, second = encode_txn_parts(StoredTxn(TxnID(258), body))
    assert head == b"\x02\x00\x00\x00\x00\x00\x00\x01\x02\x00\x00\x00\x02" + b"a" * MAX_TXN_PART_BYTES
    assert second == b"\x01\x00\x00\x00\x00\x00\x00\x01\x02bc"
    assert decode_txn_head(head) == TxnHead(TxnID(258), 2, b"a" * MAX_TXN_PART_BYTES)
    assert decode_txn(second) == StoredTxn(TxnID(258), b"bc")


def test_a_body_that_fits_one_part_is_one_version_1_record() -> None:
    body = b"a" * MAX_TXN_PART_BYTES
    assert encode_txn_parts(StoredTxn(TxnID(1), body)) == [encode_txn(StoredTxn(TxnID(1), body))]
    assert decode_txn_head(encode_txn(StoredTxn(TxnID(1), body))) == TxnHead(TxnID(1), 1, body)


@pytest.mark.parametrize("raw", [b"\x02\x00\x00", b"\x02" + bytes(8) + b"\x00\x00\x00\x01", b"\x03abc"])
def test_bad_txn_heads_raise(raw: bytes) -> None:
    with pytest.raises(InvariantBroken):
        decode_txn_head(raw)


def test_backlog_is_fifo_across_chunks_and_partial_takes() -> None:
    store = DictStore()
    backlog = Backlog("as", BacklogCursor(), store, NOW)
    backlog.append(ItemKind.EVENT, [b"1", b"2", b"3"], NOW)
    cursor = backlog.flush()
    backlog = Backlog("as", cursor, store, NOW)
    backlog.append(ItemKind.EVENT, [b"4", b"5"], NOW)
    cursor = backlog.flush()
    backlog = Backlog("as", cursor, store, NOW)
    assert backlog.take(ItemKind.EVENT, 2)[0] == [b"1", b"2"]
    assert backlog.take(ItemKind.EVENT, 2)[0] == [b"3", b"4"]
    cursor = backlog.flush()
    assert Backlog("as", cursor, store, NOW).take(ItemKind.EVENT, 1)[0] == [b"5"]


def test_backlog_consumed_chunks_are_deleted() -> None:
    store = DictStore()
    backlog = Backlog("as", BacklogCursor(), store, NOW)
    backlog.append(ItemKind.EVENT, [b"1"], NOW)
    backlog = Backlog("as", backlog.flush(), store, NOW)
    backlog.take(ItemKind.EVENT, 1)
    backlog.flush()
    assert store.data == {}


def test_items_appended_and_taken_in_one_step_are_never_written() -> None:
    store = DictStore()
    backlog = Backlog("as", BacklogCursor(), store, NOW)
    backlog.append(ItemKind.EVENT, [b"1", b"2"], NOW)
    assert backlog.take(ItemKind.EVENT, 2)[0] == [b"1", b"2"]
    backlog.flush()
    assert store.writes == 0


def test_a_large_append_is_split_into_chunks_under_the_record_cap_and_read_back_in_order() -> None:
    store = DictStore()
    backlog = Backlog("as", BacklogCursor(), store, NOW)
    items = [bytes([n % 256]) * 60_000 for n in range(40)]  # 2.4 MB in one step
    backlog.append(ItemKind.EVENT, items, NOW)
    cursor = backlog.flush()
    assert len(store.data) > 1 and all(len(chunk) <= MAX_CHUNK_BYTES + 64 for chunk in store.data.values())
    assert Backlog("as", cursor, store, NOW).take(ItemKind.EVENT, 40)[0] == items


def test_an_item_larger_than_the_cap_gets_a_chunk_of_its_own() -> None:
    store = DictStore()
    backlog = Backlog("as", BacklogCursor(), store, NOW)
    items = [b"small", b"x" * (MAX_CHUNK_BYTES + 1), b"after"]
    backlog.append(ItemKind.EVENT, items, NOW)
    cursor = backlog.flush()
    assert store.writes == 3
    assert Backlog("as", cursor, store, NOW).take(ItemKind.EVENT, 3)[0] == items


def test_taking_more_than_held_raises() -> None:
    with pytest.raises(InvariantBroken):
        Backlog("as", BacklogCursor(), DictStore(), NOW).take(ItemKind.EVENT, 1)


@pytest.mark.parametrize("missing", [0, 1], ids=["the head chunk", "the next head, read for its time"])
def test_a_chunk_the_cursor_names_but_the_store_lacks_is_our_bug_naming_it(missing: int) -> None:
    store = DictStore()
    backlog = Backlog("as", BacklogCursor(), store, NOW)
    backlog.append(ItemKind.EVENT, [b"x" * (MAX_CHUNK_BYTES + 1), b"y"], NOW)  # chunks 0 and 1
    cursor = backlog.flush()
    del store.data[chunk_key("as", ItemKind.EVENT, missing)]
    with pytest.raises(InvariantBroken, match=f"backlog chunk {missing} of as kind EVENT is missing"):
        Backlog("as", cursor, store, NOW).take(ItemKind.EVENT, 1)  # takes chunk 0 whole, then dates chunk 1


def test_body_has_events_and_both_to_device_names() -> None:
    body = orjson.loads(build_body([b'{"a":1}'], [], [b'{"t":1}']))
    assert body == {"events": [{"a": 1}], "to_device": [{"t": 1}], "de.sorunome.msc2409.to_device": [{"t": 1}]}


@pytest.mark.parametrize(
    "stable,unstable,keys",
    [(True, False, {"events", "ephemeral"}), (False, True, {"events", "de.sorunome.msc2409.ephemeral"})],
)
def test_body_ephemeral_keys_follow_the_registration(stable: bool, unstable: bool, keys: set[str]) -> None:
    body = orjson.loads(build_body([], [b"{}"], ephemeral_stable=stable, ephemeral_unstable=unstable))
    assert set(body) == keys


AS = AppserviceID("bridge")
CONFIG = MachineConfig(unit_ms=1000)


def arrived(*offsets: int) -> ItemsArrived:
    return ItemsArrived(tuple(Item(ItemKind.EVENT, SourcePosition(0, o), b'{"o":%d}' % o) for o in offsets))


def test_a_small_txn_is_stored_inline_in_the_state_it_commits_with() -> None:
    store = DictStore()
    result = run_step(AS, [arrived(1)], store, now_ms=1000, config=CONFIG)
    [send] = result.sends
    assert send.body == b'{"events":[{"o":1}]}'
    stored = decode_appservice(store.data[state_key(AS)])
    assert stored.machine.inflight is not None and stored.machine.inflight.txn_id == send.txn_id
    assert stored.inline_body == send.body
    assert set(store.data) == {state_key(AS)}, "one record for the step: no txn key to write or delete"


def big_items(*offsets: int) -> ItemsArrived:
    pad = b"x" * (INLINE_BODY_MAX // 4)
    return ItemsArrived(
        tuple(Item(ItemKind.EVENT, SourcePosition(0, o), b'{"o":%d,"p":"%s"}' % (o, pad)) for o in offsets)
    )


def test_a_big_txn_gets_its_own_key_written_before_the_state_and_deleted_after_delivery() -> None:
    store = DictStore()
    first = run_step(AS, [arrived(0)], store, now_ms=1000, config=CONFIG).sends[0]
    run_step(AS, [big_items(*range(1, 9))], store, now_ms=1000, config=CONFIG)  # parked meanwhile
    [big] = run_step(AS, [TxnSucceeded(first.txn_id)], store, now_ms=2000, config=CONFIG).sends
    assert len(big.body) > INLINE_BODY_MAX
    assert decode_txn(store.data[txn_key(AS, big.txn_id)]) == StoredTxn(big.txn_id, big.body)
    assert decode_appservice(store.data[state_key(AS)]).inline_body is None
    [resent] = run_step(AS, [Resume()], store, now_ms=3000, config=CONFIG).sends
    assert resent.body == big.body
    run_step(AS, [TxnSucceeded(big.txn_id)], store, now_ms=4000, config=CONFIG)
    assert set(store.data) == {state_key(AS)}


def spec_sized_items(*offsets: int) -> ItemsArrived:
    pad = b"x" * (64 * 1024 - 20)  # events at the Matrix spec's 64 KiB limit
    return ItemsArrived(
        tuple(Item(ItemKind.EVENT, SourcePosition(0, o), b'{"o":%d,"p":"%s"}' % (o, pad)) for o in offsets)
    )


def test_100_events_of_64_kib_are_stored_in_records_under_the_kafka_limit_and_sent_whole() -> None:
    store = DictStore()
    first = run_step(AS, [arrived(0)], store, now_ms=1000, config=CONFIG).sends[0]
    run_step(AS, [spec_sized_items(*range(1, 101))], store, now_ms=1000, config=CONFIG)
    written: list[int] = []
    store.put = lambda key, value: (written.append(len(value)), store.data.__setitem__(key, value))  # type: ignore[method-assign]
    [big] = run_step(AS, [TxnSucceeded(first.txn_id)], store, now_ms=2000, config=CONFIG).sends
    assert len(big.body) > 6_000_000
    assert [e["o"] for e in orjson.loads(big.body)["events"]] == list(range(1, 101))
    assert max(written) <= MAX_TXN_PART_BYTES + 64 < 1_000_000, "every changelog record fits under Kafka's 1 MB"
    assert decode_txn_head(store.data[txn_key(AS, big.txn_id)]).part_count == 13
    [resent] = run_step(AS, [Resume()], store, now_ms=3000, config=CONFIG).sends
    assert resent.body == big.body
    run_step(AS, [TxnSucceeded(big.txn_id)], store, now_ms=4000, config=CONFIG)
    assert set(store.data) == {state_key(AS)}, "every part is deleted once delivered"


def test_a_split_txn_missing_a_part_is_our_bug_and_says_which() -> None:
    store = DictStore()
    first = run_step(AS, [arrived(0)], store, now_ms=1000, config=CONFIG).sends[0]
    run_step(AS, [spec_sized_items(*range(1, 11))], store, now_ms=1000, config=CONFIG)
    [big] = run_step(AS, [TxnSucceeded(first.txn_id)], store, now_ms=2000, config=CONFIG).sends
    del store.data[txn_key(AS, big.txn_id, 1)]
    with pytest.raises(InvariantBroken, match="part 1 of 2"):
        run_step(AS, [Resume()], store, now_ms=3000, config=CONFIG)


def test_a_txn_stored_by_the_previous_release_under_its_own_key_is_resent_and_then_deleted() -> None:
    store = DictStore()
    [send] = run_step(AS, [arrived(1)], store, now_ms=1000, config=CONFIG).sends
    # What the previous release wrote: a version-1 state and the body under the txn's key.
    stored = decode_appservice(store.data[state_key(AS)])
    store.data[state_key(AS)] = encode_appservice(replace(stored, inline_body=None))
    store.data[txn_key(AS, send.txn_id)] = encode_txn(StoredTxn(send.txn_id, send.body))
    [resent] = run_step(AS, [Resume()], store, now_ms=2000, config=CONFIG).sends
    assert resent.body == send.body
    run_step(AS, [TxnSucceeded(send.txn_id)], store, now_ms=3000, config=CONFIG)
    assert set(store.data) == {state_key(AS)}


def test_a_retry_sends_exactly_the_stored_bytes() -> None:
    store = DictStore()
    first = run_step(AS, [arrived(1)], store, now_ms=1000, config=CONFIG).sends[0]
    run_step(AS, [TxnFailed(first.txn_id, "x"), arrived(2, 3)], store, now_ms=1000, config=CONFIG)
    from streams.machine import RetryDue

    [retry] = run_step(AS, [RetryDue(first.txn_id)], store, now_ms=3000, config=CONFIG).sends
    assert (retry.txn_id, retry.body, retry.attempt) == (first.txn_id, first.body, 1)


def test_the_parked_backlog_survives_between_steps_and_drains_in_order() -> None:
    store = DictStore()
    first = run_step(AS, [arrived(0)], store, now_ms=1000, config=CONFIG).sends[0]
    for o in range(1, 151):
        run_step(AS, [arrived(o)], store, now_ms=1000, config=CONFIG)
    bodies = []
    send = first
    while True:
        result = run_step(AS, [TxnSucceeded(send.txn_id)], store, now_ms=2000, config=CONFIG)
        if not result.sends:
            break
        send = result.sends[0]
        bodies.append(orjson.loads(send.body)["events"])
    assert [len(b) for b in bodies] == [100, 50]
    assert [e["o"] for b in bodies for e in b] == list(range(1, 151))
    assert set(store.data) == {state_key(AS)}


def test_body_format_is_applied_to_formed_txns() -> None:
    item = Item(ItemKind.EPHEMERAL, SourcePosition(0, 1), b'{"type":"m.typing"}')
    result = run_step(
        AS,
        [ItemsArrived((item,))],
        DictStore(),
        now_ms=1,
        config=CONFIG,
        body_format=BodyFormat(ephemeral_unstable=True),
    )
    assert b"de.sorunome.msc2409.ephemeral" in result.sends[0].body
