"""``python -m tests.chaos``: the chaos check from the command line; figures to bench-results/."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from agents.local_cluster import LocalCluster
from agents.local_kafka import LocalKafka
from tests.chaos.run import Brokers, ChaosConfig, run_chaos

ROOT = Path(__file__).parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load and faults (default 300)")
    parser.add_argument("--rate", type=float, default=100.0, help="events per second (default 100)")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--appservices", type=int, default=4)
    parser.add_argument("--rooms", type=int, default=8)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--no-broker-kills", action="store_true")
    parser.add_argument(
        "--brokers",
        type=int,
        choices=(1, 3),
        default=1,
        help="1: the local broker (default); 3: the local three-broker cluster (replication 3, min ISR 2),"
        " one node SIGKILLed at a time",
    )
    parser.add_argument("--drain-timeout", type=float, default=180.0, help="seconds to wait for the ledger")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    parser.add_argument("--workdir", type=Path, help="keep the workers' logs and state here (default: a temp folder)")
    args = parser.parse_args()
    config = ChaosConfig(
        duration_s=args.duration,
        rate=args.rate,
        workers=args.workers,
        appservices=args.appservices,
        rooms=args.rooms,
        broker_kills=not args.no_broker_kills,
        seed=args.seed,
        drain_timeout_s=args.drain_timeout,
    )
    port = int(os.environ.get("APPSERVICE_STREAMS_KAFKA_PORT") or 9092)
    kafka: Brokers
    if args.brokers == 3:
        kafka = LocalCluster(root=ROOT, port=int(os.environ.get("APPSERVICE_STREAMS_KAFKA_CLUSTER_PORT") or port + 8))
    else:
        kafka = LocalKafka(root=ROOT, port=port, controller_port=port + 1)
    kafka.start()
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = asyncio.run(run_chaos(config, kafka, args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="chaos-") as workdir:
            report = asyncio.run(run_chaos(config, kafka, Path(workdir)))
    figures = report.as_json()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"chaos-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    print(f"written to {path}", file=sys.stderr)
    return 0 if report.verdict.clean() else 1


if __name__ == "__main__":
    sys.exit(main())
