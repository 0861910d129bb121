"""Scenario ``synapse`` (opt-in: ``--scenario synapse``): Synapse's own sender beside this project, same run.

One real Synapse (``bench.synapse``, needs ``make synapse``) and one sink
process with two appservices that claim the same users (``@bench_.*``, not
exclusive), so they are interested in exactly the same events:

* ``direct``: registered in Synapse with the sink's URL; Synapse delivers it.
* ``streamed``: registered in Synapse with ``url: null``, and given to a
  worker with the sink's URL; its events go Synapse → firehose registration
  → ``appservice-streams ingest`` → Kafka → the worker → the sink (the
  README's cut-over).

The workload is sent once through Synapse's client API (a local user in a
room where ``@bench_bob`` is joined, one message at a time), so both see the
same messages at the same moment. Each message carries ``seq`` and
``ts_ns`` (stamped just before its send request) in its content.

1. **Live**: ``synapse_rate`` messages/s for ``synapse_live_s``: latency from
   Synapse's answer to the send to the sink, p50/p99, each path (as the
   reference figures were measured), and from the send request, p50.
2. **Outage**, for each size in ``synapse_outages``: both sinks answer 503;
   one message finds the outage; then the parked messages are sent; once
   the worker has them all parked, both sinks come back and both are pinged
   (Synapse's ping endpoint for ``direct``, the worker's for ``streamed``:
   each retries at once on a successful ping). Reported per path: time
   from the ping to the last message, transactions the sink accepted after
   it, lost, duplicated, out of order. The worker runs with the default
   retry unit (1 s), as Synapse's (2 s) backoff is not shortened either.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench import procs
from bench.load import SERVER_NAME
from bench.results import ScenarioResult
from bench.rig import Rig
from bench.scenarios.common import Context, Sizes, duplicates_and_missing
from bench.stats import NS_PER_MS, NS_PER_S, percentile
from bench.synapse import SYNAPSE_PYTHON, Client, Synapse, free_port, register_appservice_user, register_user

PATHS = ("direct", "streamed")
USERS = f"@bench_.*:{SERVER_NAME}"
OUTAGE_SEQ_BASE = 1_000_000  # outage k (from 1) numbers its messages from k * this


def _registration(name: str, url: str | None) -> dict[str, Any]:
    return {
        "id": name,
        "url": url,
        "as_token": f"as-{name}",
        "hs_token": "bench-hs-token",
        "sender_localpart": f"{name}bot",
        "namespaces": {"users": [{"regex": USERS, "exclusive": False}], "aliases": [], "rooms": []},
    }


def _deploy(ctx: Context, rig: Rig, ingest_port: int) -> list[Path]:
    """The registrations as the cut-over guide has them; returns the files Synapse loads."""
    from streams.ingest import firehose_registration

    synapse_dir = rig.root / "synapse-appservices"
    synapse_dir.mkdir()
    files = {
        "firehose": firehose_registration("firehose", f"http://127.0.0.1:{ingest_port}", "as-fh", "hs-fh"),
        "direct": _registration("direct", rig.sinks.url("direct")),
        "streamed": _registration("streamed", None),
    }
    for name, doc in files.items():
        (synapse_dir / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    (rig.registrations / "streamed.yaml").write_text(
        yaml.safe_dump(_registration("streamed", rig.sinks.url("streamed")))
    )
    return [synapse_dir / f"{name}.yaml" for name in files]


def _start_ingest(ctx: Context, rig: Rig, firehose: Path, port: int) -> None:
    log = rig.root / "ingest.log"
    args = ["-m", "agents.cli", "ingest", "--registration", str(firehose), "--listen", f"127.0.0.1:{port}"]
    args += ["--topic", rig.input_topic, "--bootstrap-servers", ctx.bootstrap]
    rig.others.append(procs.spawn(args, log_path=log, cwd=rig.source))
    if not rig.wait_until(lambda: log.exists() and "ingest ready" in log.read_text(errors="replace"), 60.0, 0.05):
        raise RuntimeError(f"ingest not ready: {log.read_text(errors='replace')[-2000:] if log.exists() else ''}")


def _of(events: dict[str, Any], path: str, low: int, high: int) -> list[tuple[int, int, int]]:
    """(arrival ns, ts_ns, seq) of ``path``'s events with ``low <= seq < high``, in arrival order."""
    index = events["names"].index(path) if path in events["names"] else -1
    rows = zip(events["arrival"], events["ts"], events["seq"], events["as"], strict=True)
    return [(at, ts, seq) for at, ts, seq, a in rows if a == index and low <= seq < high]


def _out_of_order(seqs: list[int]) -> int:
    return sum(1 for a, b in itertools.pairwise(seqs) if b < a)


class _Load:
    def __init__(self, rig: Rig, alice: Client, room_id: str) -> None:
        self.rig, self.alice, self.room_id = rig, alice, room_id
        self.responded: dict[int, int] = {}  # seq → time.time_ns() when Synapse answered its send

    async def send(self, seq: int) -> None:
        content = {
            "msgtype": "m.text",
            "body": f"bench {seq}",
            "seq": seq,
            "ts_ns": str(time.time_ns()),
        }  # a string: over 2**53
        await self.alice.call("PUT", self._path(seq), content)
        self.responded[seq] = time.time_ns()

    def _path(self, seq: int) -> str:
        from urllib.parse import quote

        return f"/_matrix/client/v3/rooms/{quote(self.room_id)}/send/m.room.message/b{seq}"

    async def until(self, predicate: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"synapse: {what} not reached in {timeout_s:.0f} s")
            await asyncio.sleep(0.1)

    def arrived(self, low: int, high: int) -> bool:
        events = self.rig.sinks.events()
        return all(len({seq for _, _, seq in _of(events, p, low, high)}) >= high - low for p in PATHS)


async def _ping(http: aiohttp.ClientSession, base: str, appservice: str) -> int:
    url = f"{base}/_matrix/client/v1/appservice/{appservice}/ping"
    headers = {"Authorization": f"Bearer as-{appservice}"}
    async with http.post(url, json={"transaction_id": f"bench-{time.time_ns()}"}, headers=headers) as response:
        return response.status


async def _measure(
    ctx: Context, sizes: Sizes, rig: Rig, synapse: Synapse, worker_http: str, result: ScenarioResult
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        alice = await register_user(http, synapse, "alice")
        bob = await register_appservice_user(http, synapse, "as-direct", "bench_bob")
        room_id = await alice.create_room()
        await alice.invite(room_id, bob.user_id)
        await bob.join(room_id)
        load = _Load(rig, alice, room_id)
        stats = rig.sinks.stats
        await load.until(lambda: all(stats().get(p, {}).get("events", 0) >= 2 for p in PATHS), 60, "the join at both")
        ctx.turn()

        # 1. Live.
        count = max(1, int(sizes.synapse_rate * sizes.synapse_live_s))
        started = time.monotonic()
        for seq in range(count):
            await asyncio.sleep(max(0.0, started + seq / sizes.synapse_rate - time.monotonic()))
            await load.send(seq)
        await load.until(lambda: load.arrived(0, count), ctx.patience(60.0), "live messages at both")
        events = rig.sinks.events()
        for path in PATHS:
            rows = _of(events, path, 0, count)
            ms = sorted((at - load.responded[seq]) / NS_PER_MS for at, _, seq in rows)
            result.add(f"{path}: live latency p50 at {sizes.synapse_rate:g} msg/s", percentile(ms, 50), "ms")
            result.add(f"{path}: live latency p99", percentile(ms, 99), "ms", note="send response → sink")
            ms = sorted((at - ts) / NS_PER_MS for at, ts, _ in rows)
            result.add(f"{path}: live latency p50 from the send request", percentile(ms, 50), "ms")

        # 2. Outages.
        for k, size in enumerate(sizes.synapse_outages, start=1):
            base = k * OUTAGE_SEQ_BASE
            for path in PATHS:
                rig.sinks.set_mode(path, "down")
            before = {p: stats()[p]["requests"] for p in PATHS}
            await load.send(base)  # finds the outage on both paths
            found = lambda b=before: all(stats()[p]["requests"] > b[p] for p in PATHS)  # noqa: E731
            await load.until(found, 60, "the outage found")
            sent_at = time.monotonic()
            for seq in range(base + 1, base + 1 + size):
                await load.send(seq)
            send_s = time.monotonic() - sent_at
            # Parked by the worker: Synapse fed the ingest, and the worker's groups have no lag left.
            await asyncio.sleep(1.0)
            await asyncio.to_thread(rig.wait_parked, rig.workers[0], ctx.patience(60.0 + size / 200), "parking", size)
            up_ns = time.time_ns()
            for path in PATHS:
                rig.sinks.set_mode(path, "ok")
            pings = [await _ping(http, synapse.url, "direct"), await _ping(http, worker_http, "streamed")]
            timeout = ctx.patience(120.0 + size / 50)
            arrived = lambda b=base, n=size: load.arrived(b, b + 1 + n)  # noqa: E731
            await load.until(arrived, timeout, f"the {size} parked messages")
            await asyncio.sleep(1.0)  # duplicates would come now
            events, requests = rig.sinks.events(), rig.sinks.requests()
            result.add(f"outage {size}: sending them through the client API", send_s, "s")
            for path, status in zip(PATHS, pings, strict=True):
                rows = _of(events, path, base, base + 1 + size)
                seqs = [seq - base for _, _, seq in rows]
                index = requests["names"].index(path)
                accepted = {
                    txn
                    for at, a, txn, st in zip(
                        requests["arrival"], requests["as"], requests["txn"], requests["status"], strict=True
                    )
                    if a == index and st == 200 and at >= up_ns
                }
                duplicates, missing = duplicates_and_missing(seqs, size + 1)
                last = max(at for at, _, _ in rows) if rows else None
                note = "" if status == 200 else f"ping answered {status}"
                result.add(
                    f"{path}, outage {size}: sink up + ping → last message",
                    None if last is None else (last - up_ns) / NS_PER_S,
                    "s",
                    note=note,
                )
                result.add(f"{path}, outage {size}: transactions after it came back", len(accepted), "txns")
                result.add(f"{path}, outage {size}: lost", missing, "messages")
                result.add(f"{path}, outage {size}: duplicated", duplicates, "messages")
                result.add(f"{path}, outage {size}: out of order", _out_of_order(seqs), "messages")


def run(ctx: Context, sizes: Sizes) -> ScenarioResult:
    result = ScenarioResult(
        "synapse",
        config={"rate": sizes.synapse_rate, "live_s": sizes.synapse_live_s, "outages": list(sizes.synapse_outages)},
    )
    if not SYNAPSE_PYTHON.exists():
        raise RuntimeError(f"{SYNAPSE_PYTHON} is missing: run `make synapse`")
    with ctx.rig("synapse") as rig:
        from agents.topics import ensure_topic

        rig.sinks.start()
        for path in PATHS:
            rig.sinks.set_mode(path, "ok")  # named in the sink's tables from the start
        ingest_port, worker_port = free_port(), free_port()
        files = _deploy(ctx, rig, ingest_port)
        ensure_topic(ctx.bootstrap, rig.input_topic, 8)
        synapse = Synapse(rig.root / "synapse", files, server_name=SERVER_NAME)
        synapse.configure()
        result.add("Synapse start", synapse.start(), "s")
        try:
            worker = rig.worker(retry_unit_ms=1000)
            worker.extra_env["APPSERVICE_STREAMS_HTTP_PORT"] = str(worker_port)  # its ping endpoint
            worker.start()
            worker.wait_ready(60.0)
            _start_ingest(ctx, rig, files[0], ingest_port)
            asyncio.run(_measure(ctx, sizes, rig, synapse, f"http://127.0.0.1:{worker_port}", result))
        finally:
            synapse.stop()
    return result
