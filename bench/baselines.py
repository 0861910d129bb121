"""The two baselines, each a consumer process on the same input topic as the worker.

(a) ``confluent``: a bare confluent-kafka consumer, no state, that groups events
    per appservice and PUTs up to 100 per transaction to the same sinks, one
    transaction in flight per appservice: the limit of this job in Python on
    this machine.
(b) ``faust``: a bare Faust agent that only iterates the topic (kafka://
    transport, like the worker): the framework's ceiling for the router alone.

Run as ``python -m bench.baselines confluent|faust …``; both print
``baseline ready`` once partitions are assigned. (b) writes its result (event
count and the time of every 10 % of them) to ``--result`` as JSON, and keeps
its (in-memory store's) data folder in ``--data-dir``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

READY = "baseline ready"
BATCH = 100


async def _confluent(args: argparse.Namespace) -> None:
    import aiohttp
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
        }
    )
    consumer.subscribe([args.topic], on_assign=lambda c, partitions: print(READY, flush=True))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    headers = {"Authorization": f"Bearer {args.hs_token}", "Content-Type": "application/json"}
    pending: dict[str, list[bytes]] = defaultdict(list)
    inflight: set[str] = set()
    tasks: set[asyncio.Task[None]] = set()
    next_txn = time.time_ns() // 1000

    async def put(name: str, txn: int, events: list[bytes]) -> None:
        body = b'{"events":[' + b",".join(events) + b"]}"
        url = f"{args.sink_base}/{name}/_matrix/app/v1/transactions/{txn}"
        try:
            async with session.put(url, data=body, headers=headers) as response:
                await response.read()
        finally:
            inflight.discard(name)

    try:
        while True:
            # Never block: consume() waits for all 500 messages or the timeout, which
            # would hold back every reply being read meanwhile (32 ms p50 at 2,000/s).
            messages = consumer.consume(500, timeout=0)
            for message in messages:
                if message.error() is not None:
                    continue
                event = orjson.loads(message.value() or b"{}")["event"]
                pending[event["sender"][1:].split("_", 1)[0]].append(orjson.dumps(event))
            for name, items in pending.items():
                if items and name not in inflight:
                    inflight.add(name)
                    next_txn += 1
                    task = asyncio.create_task(put(name, next_txn, items[:BATCH]))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    del items[:BATCH]
            await asyncio.sleep(0 if messages else 0.0005)
    finally:
        consumer.close()
        await session.close()


def _faust(args: argparse.Namespace) -> None:
    import faust

    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.bootstrap}",
        autodiscover=False,
        web_enabled=False,
        store="memory://",
        datadir=args.data_dir,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
    )
    topic = app.topic(args.topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    result = Path(args.result)
    marks: dict[int, int] = {}
    step = max(1, args.expect // 10)

    def save(seen: int) -> None:
        # A few hundred bytes, eleven times per run: not worth a thread.
        marks[seen] = time.time_ns()
        result.write_bytes(orjson.dumps({"count": seen, "marks": marks}, option=orjson.OPT_NON_STR_KEYS))

    @app.agent(topic, name="count")
    async def count(stream: Any) -> None:
        seen = 0
        async for _event in stream.events():
            seen += 1
            if seen == 1 or seen % step == 0 or seen == args.expect:
                save(seen)

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def ready(sender: Any, **kwargs: Any) -> None:
        # A rebalance can end with none of the input's partitions (the topic's
        # metadata not known yet): not ready then, or the bench would wait for
        # events this process never fetches.
        owned = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == args.topic)
        print(READY if owned else "rebalanced without partitions of the input topic", flush=True)

    faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()


def faust_result(path: Path) -> dict[str, Any]:
    """The faust baseline's progress: ``{"count": n, "marks": {events: time_ns}}`` (empty before the first event)."""
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {"count": 0, "marks": {}}
    return {"count": int(doc["count"]), "marks": {int(k): int(v) for k, v in doc["marks"].items()}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["confluent", "faust"])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", help="consumer group (confluent)")
    parser.add_argument("--app-id", help="Faust app id (faust)")
    parser.add_argument("--sink-base", help="http://127.0.0.1:PORT (confluent)")
    parser.add_argument("--hs-token", default="bench-hs-token")
    parser.add_argument("--expect", type=int, default=0, help="events to expect (faust)")
    parser.add_argument("--result", help="JSON result file (faust)")
    parser.add_argument("--data-dir", default="{appid}-data", help="Faust's data folder (faust; default %(default)s)")
    args = parser.parse_args(argv)
    try:
        if args.kind == "confluent":
            asyncio.run(_confluent(args))
        else:
            _faust(args)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
